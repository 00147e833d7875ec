"""The Faust app: topics, the scoring agent, the sweeper and outbox timers, web views."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scoring import COMPILED
from scoring.config import ScoringConfig
from streams import metrics
from streams.kafka.acks import InOrderAcks
from streams.kafka.assignment import MissingTopicsWatch, check_worker_consumer
from streams.kafka.batches import BatchReader, ack_all, drain_is_known
from streams.kafka.fetching import FetchPolicy, set_fetching
from streams.kafka.publisher import Publisher
from streams.pipeline.delivery import AlertDelivery
from streams.pipeline.intake import Record
from streams.pipeline.outcomes import BatchOutcome
from streams.pipeline.processor import Scorer
from streams.settings import Settings
from streams.state.kpis import GAUGE_REFRESH_S, KpiSource
from streams.state.positions import (
    EXIT_STATE_LOST,
    GuardedStore,
    Positions,
    StateLost,
    done_frontier,
    install_repositioning,
)
from streams.state.redis_client import redis_of
from streams.state.store import OutboxEntry

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Runtime:
    """What the agent, timers and views share inside one worker process."""

    settings: Settings
    app: Any  # faust.App: untyped library
    store: GuardedStore
    scorer: Scorer
    publisher: Publisher
    positions: Positions
    alerts: AlertDelivery
    # Outbox entries seen by the previous relay pass, per shard.
    outbox_seen: dict[int, set[str]] = field(default_factory=dict)
    # Acknowledges finished records' tokens (Faust events or messages), in order, once
    # reading has started: one await per batch, not per record. The tokens of records read
    # and not acknowledged yet wait in ``acks``.
    ack: Callable[[list[Any]], Awaitable[None]] | None = None
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
        """Deliver a batch's dead letters and reroutes, then acknowledge the records it is
        done with: the consumer never commits past a record whose effects are not all
        delivered or, for alerts, committed to the outbox (sent in the background)."""
        await self.publisher.publish(dead_letters=outcome.dead_letters, reroutes=outcome.reroutes)
        await self.alerts.submit(outcome.alerts)
        assert self.ack is not None, "records are finished only once reading has started"
        # Only those still held: a partition revoked while the batch ran has forgotten the
        # records it held below them (its next owner reads them again), so recording its
        # dead letters done would skip those. Asked before finish() lets them go.
        delivered = [d.record for d in outcome.dead_letters] + [r.record for r in outcome.reroutes]
        held = self.acks.known(delivered) if delivered else []
        await self.ack(self.acks.finish(outcome.done))
        await self.record_delivered(held)

    async def record_delivered(self, records: Sequence[Record]) -> None:
        """Dead letters and reroutes (``records``) leave no applied offset in Redis; record
        how far their partitions are finished, or a restart after a Redis loss would re-read
        them from their last scored record (see streams/state/positions.py). A partition whose
        records below them are still waiting is recorded as far as it can be, and again
        later."""
        for r in records:
            tp = (r.topic, r.partition)
            self.delivered[tp] = max(self.delivered.get(tp, -1), r.offset)
        if self.delivered:
            frontier = done_frontier(self.delivered, self.acks.first_pending())
            await self.scorer.retrying(lambda: self.positions.record_done(frontier))
            for tp, offset in frontier.items():
                # Another batch may have finished meanwhile and moved this on.
                if self.delivered.get(tp) == offset:
                    del self.delivered[tp]

    async def finish_batch(self, records: Sequence[Record]) -> None:
        await self.finish(await self.scorer.process(records))

    async def score(self, messages: Sequence[Any], tokens: Sequence[Any]) -> None:
        """Score the records of ``messages``; ``tokens`` acknowledge them, one each."""
        started = time.perf_counter()
        records = [_record(message) for message in messages]
        self.acks.read_all(records, tokens)
        await _stop_if_state_lost(self.finish_batch(records))
        metrics.BATCH_EVENTS.observe(len(records))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def finish_release(self) -> None:
        await self.finish(await self.scorer.release())


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
    store = GuardedStore(client, settings.namespace, per_shard_calls=settings.redis_per_shard_calls)
    scorer = Scorer.for_settings(settings, store, config, aligned_topics)
    publisher = Publisher.for_settings(settings)
    positions = Positions(store, settings.partitions)

    async def send_alerts(entries: Sequence[OutboxEntry]) -> None:
        await publisher.publish(alerts=entries)

    async def delete_sent(entries: Sequence[OutboxEntry]) -> None:
        await scorer.retrying(lambda: store.delete_outbox(entries))

    alerts = AlertDelivery(
        send_alerts, delete_sent, settings.max_unsent_alerts, sent=scorer.sent_alerts
    )
    rt = Runtime(settings, app, store, scorer, publisher, positions, alerts)

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

    async def remove_sent_alerts(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        # Alerts Kafka acknowledged wait for their shard's next commit to leave the
        # outbox; at a clean stop there is none, and the next owner would publish them again.
        try:
            await asyncio.wait_for(alerts.remove_sent(), 5.0)
        except Exception as exc:  # Redis away: the next owner publishes them (same ids)
            log.warning("sent alerts left in the outbox at stop: %r", exc)

    app.on_before_shutdown.connect(remove_sent_alerts)

    input_names = {*settings.input_topics, settings.topic_rerouted}

    async def reposition_from_redis(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        # Sent before Faust's recovery seeks to the committed offsets: hook into that seek.
        install_repositioning(
            app.consumer, positions, input_names, scorer.retrying, _stop_if_state_lost
        )

    app.on_partitions_assigned.connect(reposition_from_redis)

    missing_inputs = MissingTopicsWatch(input_names)

    async def look_up_missing_inputs() -> None:
        await check_worker_consumer(missing_inputs, app.consumer)

    app.timer(MissingTopicsWatch.interval_s)(look_up_missing_inputs)

    inputs = app.topic(
        *settings.input_topics,
        settings.topic_rerouted,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    policy = FetchPolicy(sessions=settings.fetch_sessions, gather_ms=settings.fetch_gather_ms)
    set_fetching(app.consumer, settings.fetch_max_wait_ms, settings.fetch_min_bytes, policy)
    _read_inputs(rt, inputs)

    async def name_runtime() -> None:
        loop = type(asyncio.get_running_loop()).__module__
        core = f"compiled ({len(COMPILED)} modules)" if COMPILED else "pure Python"
        log.info("running on %s; scoring core %s", loop, core)

    app.task(name_runtime)

    async def release_waiting() -> None:
        """Score events the event clock has passed since the last batch arrived."""
        if rt.ack is not None:
            await _stop_if_state_lost(rt.finish_release())

    app.timer(settings.sweep_interval_s)(release_waiting)

    async def sweep() -> None:
        shards = rt.owned_shards()
        while True:
            entries, swept = await _stop_if_state_lost(scorer.sweep(shards, settings.sweep_batch))
            await rt.alerts.submit(entries)
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
        Entries this worker is sending are skipped; others are sent once seen by two
        passes, so a worker that committed them a moment ago (the shard's previous owner,
        during a rebalance) has the time to send them itself."""
        shards = rt.owned_shards()
        if not shards:
            return
        pending = await scorer.retrying(lambda: store.pending_outbox(shards, 10_000))
        pending = [e for e in pending if not rt.alerts.handles(e)]
        stale = [e for e in pending if e.entry_id in rt.outbox_seen.get(e.shard, set())]
        rt.outbox_seen = {}
        for e in pending:
            rt.outbox_seen.setdefault(e.shard, set()).add(e.entry_id)
        if stale:
            await rt.alerts.submit(stale)
            metrics.OUTBOX_RELAYED.inc(len(stale))

    app.timer(settings.outbox_relay_interval_s)(relay_outbox)

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


def _read_inputs(rt: Runtime, inputs: Any) -> None:
    """Feed the input topics to ``rt.score``: whole fetched batches when the installed
    faust-streaming is the one streams/kafka/batches.py was written for, else Faust's agent."""
    app, settings = rt.app, rt.settings
    batches = settings.ingest == "batches" and drain_is_known()
    if settings.ingest == "batches" and not batches:
        log.warning(
            "this faust-streaming is not the version streams/kafka/batches.py replaces a method "
            "of; reading through Faust's agent instead (slower)"
        )
    if batches:
        metrics.INGEST_PATH.labels("batches").set(1)

        async def ack_messages(messages: list[Any]) -> None:
            ack_all(app.consumer, messages)

        async def handle(messages: list[Any]) -> None:
            try:
                await rt.score(messages, messages)
            except Exception:
                # The fetch loop would wait for this reader for ever: stop as a crash
                # would, and let the supervisor start the worker again.
                log.critical("scoring failed; exiting", exc_info=True)
                _exit(1)

        reader = BatchReader(app, settings.batch_max_events, settings.batch_within_s, handle)
        reader.install(inputs)

        async def read_batches() -> None:
            rt.ack = ack_messages
            await reader.run()

        app.task(read_batches)
        return

    metrics.INGEST_PATH.labels("agent").set(1)

    async def score(stream: Any) -> AsyncIterator[None]:
        async def ack_events(events: list[Any]) -> None:
            for event in events:
                await stream.ack(event)

        rt.ack = ack_events
        async for events in stream.noack_take(
            settings.batch_max_events, within=settings.batch_within_s
        ):
            await rt.score([e.message for e in events], events)
            yield None

    # concurrency=1: with more, Faust can commit past a batch still in flight.
    app.agent(inputs, name="score", concurrency=1)(score)


def _exit(code: int) -> NoReturn:
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(code)


async def _stop_if_state_lost(work: Awaitable[T]) -> T:
    """Redis lost writes under this worker: what it has read ahead of Redis must be read
    again, which only a fresh assignment (positioned from Redis) does safely. Stop at once,
    as a crash would: the supervisor starts the worker again."""
    try:
        return await work
    except StateLost as exc:
        log.critical("%s; exiting (%d) to resume from what Redis holds", exc, EXIT_STATE_LOST)
        _exit(EXIT_STATE_LOST)


def _record(message: Any) -> Record:
    headers = message.headers
    # positionally: keywords cost a third more, once per record
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        dict(headers) if headers else {},
    )
