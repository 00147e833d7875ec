"""The Faust app: topics, the scoring agent, the sweeper and outbox timers, web views."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import faust
import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scoring.config import ScoringConfig
from streams import metrics
from streams.intake import Decoder, Record
from streams.processor import AlertTopics, Scorer
from streams.publisher import Publisher
from streams.settings import Settings
from streams.store import OutboxEntry, StateStore

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the agent, timers and views share inside one worker process."""

    settings: Settings
    app: Any  # faust.App: untyped library
    redis: aioredis.Redis
    store: StateStore
    scorer: Scorer
    publisher: Publisher
    # Outbox entries seen by the previous relay pass, per shard.
    outbox_seen: dict[int, set[str]]

    def owned_shards(self) -> list[int]:
        """Shards are the partitions of the input topics this worker is assigned."""
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # the consumer is not started yet
            return []
        names = {*self.settings.input_topics, self.settings.topic_rerouted}
        shards = sorted({tp.partition for tp in assigned if tp.topic in names})
        metrics.OWNED_SHARDS.set(len(shards))
        return shards

    async def deliver_alerts(self, entries: Sequence[OutboxEntry]) -> None:
        if entries:
            await self.publisher.publish(alerts=entries)
            await self.scorer.retrying(lambda: self.store.delete_outbox(entries))


def create_app(settings: Settings, config: ScoringConfig, aligned_topics: set[str]) -> Runtime:
    datadir = settings.state_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_in_thread=False,
        datadir=str(datadir),
        logging_config=None,
    )
    client = aioredis.from_url(settings.redis_url.get_secret_value())
    store = StateStore(client, settings.namespace)
    decoder = Decoder(*settings.input_topics, rerouted=settings.topic_rerouted)
    scorer = Scorer(
        store,
        decoder,
        aligned_topics,
        config,
        AlertTopics(settings.topic_churn_risk, settings.topic_interventions),
        shards=settings.partitions,
        clock=settings.clock,
        wall=time.time,
        retry_max_s=settings.redis_retry_max_s,
    )
    publisher = Publisher(
        settings.kafka_bootstrap,
        settings.topic_deadletter,
        settings.topic_rerouted,
        idempotence=settings.producer_idempotence,
        retry_max_s=settings.redis_retry_max_s,
    )
    rt = Runtime(settings, app, client, store, scorer, publisher, {})

    def highwater(topic: str, partition: int) -> int | None:
        try:
            value = app.consumer.highwater(faust.types.TP(topic, partition))
        except Exception:  # not assigned here, or the consumer is not running yet
            return None
        return int(value) if value is not None else None

    scorer.highwater = highwater

    inputs = app.topic(
        *settings.input_topics,
        settings.topic_rerouted,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def score(stream: Any) -> AsyncIterator[None]:
        async for events in stream.noack_take(
            settings.batch_max_events, within=settings.batch_within_s
        ):
            started = time.perf_counter()
            records = [_record(e.message) for e in events]
            outcome = await scorer.process(records)
            await publisher.publish(dead_letters=outcome.dead_letters, reroutes=outcome.reroutes)
            await rt.deliver_alerts(outcome.alerts)
            for event in events:
                await stream.ack(event)
            metrics.BATCH_EVENTS.observe(len(records))
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            yield None

    # concurrency=1: with more, Faust can commit past a batch still in flight.
    app.agent(inputs, name="score", concurrency=1)(score)

    async def sweep() -> None:
        shards = rt.owned_shards()
        while True:
            entries = await scorer.sweep(shards, settings.sweep_batch)
            await rt.deliver_alerts(entries)
            if len(entries) == 0:
                break

    app.timer(settings.sweep_interval_s)(sweep)

    async def relay_outbox() -> None:
        """Publish alerts left in the outbox by a worker that died before sending them.
        An entry is sent once it has been seen by two passes, so alerts the agent is
        delivering right now are left to it."""
        shards = rt.owned_shards()
        if not shards:
            return
        pending = await scorer.retrying(lambda: store.pending_outbox(shards, 10_000))
        stale = [e for e in pending if e.entry_id in rt.outbox_seen.get(e.shard, set())]
        rt.outbox_seen = {}
        for e in pending:
            rt.outbox_seen.setdefault(e.shard, set()).add(e.entry_id)
        if stale:
            await rt.deliver_alerts(stale)
            metrics.OUTBOX_RELAYED.inc(len(stale))

    app.timer(settings.outbox_relay_interval_s)(relay_outbox)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        try:
            await client.ping()
        except Exception as exc:
            return web.json({"status": "redis unavailable", "error": str(exc)}, status=503)
        return web.json({"status": "ok", "owned_shards": rt.owned_shards()})

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return rt


def _record(message: Any) -> Record:
    headers = message.headers or ()
    if isinstance(headers, dict):
        headers = headers.items()
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers={k: v for k, v in headers},
    )
