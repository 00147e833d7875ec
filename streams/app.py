"""The Faust app: topics, the scoring agent, the sweeper and outbox timers, web views."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scoring.config import ScoringConfig
from streams import metrics
from streams.acks import InOrderAcks
from streams.intake import Record
from streams.positions import (
    EXIT_STATE_LOST,
    GuardedStore,
    Positions,
    StateLost,
    done_frontier,
    install_repositioning,
)
from streams.processor import BatchOutcome, Scorer
from streams.publisher import Publisher
from streams.settings import Settings
from streams.store import OutboxEntry, redis_of

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Runtime:
    """What the agent, timers and views share inside one worker process."""

    settings: Settings
    app: Any  # faust.App: untyped library
    redis: Any  # redis.asyncio.Redis or RedisCluster
    store: GuardedStore
    scorer: Scorer
    publisher: Publisher
    positions: Positions
    # Outbox entries seen by the previous relay pass, per shard.
    outbox_seen: dict[int, set[str]] = field(default_factory=dict)
    # The agent's stream and its unacknowledged events, acknowledged in offset order.
    stream: Any = None
    acks: InOrderAcks = field(default_factory=InOrderAcks)
    # Highest dead-lettered or rerouted offset per partition not yet recorded in Redis.
    delivered: dict[tuple[str, int], int] = field(default_factory=dict)

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

    async def finish(self, outcome: BatchOutcome) -> None:
        """Deliver a batch's outputs, then acknowledge the records it is done with: the
        consumer never commits past a record whose effects are not all delivered."""
        await self.publisher.publish(dead_letters=outcome.dead_letters, reroutes=outcome.reroutes)
        await self.deliver_alerts(outcome.alerts)
        for event in self.acks.finish(outcome.done):
            await self.stream.ack(event)
        await self.record_delivered(outcome)

    async def record_delivered(self, outcome: BatchOutcome) -> None:
        """Dead letters and reroutes leave no applied offset in Redis; record how far their
        partitions are finished, or a restart after a Redis loss would re-read them from
        their last scored record (see streams/positions.py). A partition whose records
        below them are still waiting is recorded as far as it can be, and again later."""
        for r in [d.record for d in outcome.dead_letters] + [r.record for r in outcome.reroutes]:
            tp = (r.topic, r.partition)
            self.delivered[tp] = max(self.delivered.get(tp, -1), r.offset)
        if self.delivered:
            frontier = done_frontier(self.delivered, self.acks.events)
            # What this worker committed before the write is sent (see GuardedStore.read).
            committed = {k: dict(v) for k, v in self.store.committed_here.items()}
            await self.scorer.retrying(lambda: self.positions.record_done(frontier, committed))
            for tp, offset in frontier.items():
                # Another batch may have finished meanwhile and moved this on.
                if self.delivered.get(tp) == offset:
                    del self.delivered[tp]

    async def finish_batch(self, records: Sequence[Record]) -> None:
        await self.finish(await self.scorer.process(records))

    async def finish_release(self) -> None:
        await self.finish(await self.scorer.release())

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
        # Events waiting for the event clock are unacknowledged on purpose; a rebalance
        # must not wait for them (they are read again by the partition's next owner).
        stream_wait_empty=False,
    )
    client = redis_of(settings)
    store = GuardedStore(client, settings.namespace)
    scorer = Scorer.for_settings(settings, store, config, aligned_topics)
    publisher = Publisher.for_settings(settings)
    positions = Positions(store, settings.partitions)
    rt = Runtime(settings, app, client, store, scorer, publisher, positions)

    def highwater(topic: str, partition: int) -> int | None:
        # Unknown (not fetched yet, or not assigned) counts as "records left to read": the
        # event clock then waits rather than judging customers silent too early.
        try:
            value = app.consumer.highwater(faust.types.TP(topic, partition))
        except Exception:
            return sys.maxsize
        return int(value) if value is not None else sys.maxsize

    def committed(topic: str, partition: int) -> int | None:
        # Faust keeps the group's committed offsets only in this private map; without it a
        # restarted worker could not tell a fully read partition from an unread one.
        offsets = getattr(app.consumer, "_committed_offset", {})
        value = offsets.get(faust.types.TP(topic, partition))
        return int(value) if value is not None else None

    scorer.buffer.highwater = highwater
    scorer.buffer.committed = committed

    async def forget_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0]
        scorer.buffer.forget((tp.topic, tp.partition) for tp in revoked)
        for tp in revoked:
            rt.acks.forget((tp.topic, tp.partition))
            rt.delivered.pop((tp.topic, tp.partition), None)

    app.on_partitions_revoked.connect(forget_revoked)

    input_names = {*settings.input_topics, settings.topic_rerouted}

    async def reposition_from_redis(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        # Sent before Faust's recovery seeks to the committed offsets: hook into that seek.
        install_repositioning(app.consumer, positions, input_names, scorer.retrying)

    app.on_partitions_assigned.connect(reposition_from_redis)

    inputs = app.topic(
        *settings.input_topics,
        settings.topic_rerouted,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def score(stream: Any) -> AsyncIterator[None]:
        rt.stream = stream
        async for events in stream.noack_take(
            settings.batch_max_events, within=settings.batch_within_s
        ):
            started = time.perf_counter()
            records = []
            for e in events:
                record = _record(e.message)
                rt.acks.read(record, e)
                records.append(record)
            await _stop_if_state_lost(rt.finish_batch(records))
            metrics.BATCH_EVENTS.observe(len(records))
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            yield None

    async def release_waiting() -> None:
        """Score events the event clock has passed since the last batch arrived."""
        if rt.stream is not None:
            await _stop_if_state_lost(rt.finish_release())

    app.timer(settings.sweep_interval_s)(release_waiting)

    # concurrency=1: with more, Faust can commit past a batch still in flight.
    app.agent(inputs, name="score", concurrency=1)(score)

    async def sweep() -> None:
        shards = rt.owned_shards()
        while True:
            entries, swept = await _stop_if_state_lost(scorer.sweep(shards, settings.sweep_batch))
            await rt.deliver_alerts(entries)
            if swept < settings.sweep_batch:
                break

    app.timer(settings.sweep_interval_s)(sweep)

    async def check_state_kept() -> None:
        """Notice Redis losing writes even when no batch comes to read the shards."""
        shards = rt.owned_shards()
        if shards:
            await _stop_if_state_lost(scorer.retrying(lambda: store.metas(shards)))

    if settings.clock == "wall":
        # On the event clock every sweep reads all owned shards' metas (for the
        # watermarks) through the same guard, at the same interval.
        app.timer(settings.sweep_interval_s)(check_state_kept)

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

    from streams.kpis import GAUGE_REFRESH_S, KpiSource

    kpi_source = KpiSource(client, settings.namespace, settings.partitions, settings.clock)

    async def refresh_kpis() -> None:
        """Population KPI gauges, read from every shard (not only the owned ones)."""
        await kpi_source.refresh_gauges()

    app.timer(GAUGE_REFRESH_S)(refresh_kpis)

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

    @app.page("/kpis")
    async def kpis_view(web: Any, request: Any) -> Any:
        """Population KPIs as JSON; ``?window_days=N`` picks the window."""
        try:
            report = await kpi_source.report(request.query.get("window_days"))
        except ValueError as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json(report)

    return rt


async def _stop_if_state_lost(work: Awaitable[T]) -> T:
    """Redis lost writes under this worker: what it has read ahead of Redis must be read
    again, which only a fresh assignment (positioned from Redis) does safely. Stop at once,
    as a crash would: the supervisor starts the worker again."""
    try:
        return await work
    except StateLost as exc:
        log.critical("%s; exiting (%d) to resume from what Redis holds", exc, EXIT_STATE_LOST)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_STATE_LOST)


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
