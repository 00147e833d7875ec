"""Scoring a batch of consumed records against Redis, independent of Faust.

A batch is decoded; unscorable records become dead letters and records that sit on a
partition other than their customer's owner partition are rerouted. The rest are grouped
by shard, their state read in one round trip, scored by ``scoring``, and written back with
their alerts (to the outbox) and applied offsets by one atomic script call per shard, all
pipelined: one round trip. A shard that changed in between is re-read and re-done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis.exceptions

from schemas.alerts import ChurnRiskAlert
from scoring.config import ScoringConfig
from scoring.engine import Alert, apply_event
from scoring.state import CustomerState
from streams import metrics
from streams.pipeline.delivery import SentAlerts
from streams.pipeline.intake import Decoder, Record, RejectedRecord, shard_of
from streams.pipeline.ordering import EventTimeBuffer, Scorable
from streams.pipeline.outcomes import BatchOutcome, DeadLetter, Reroute
from streams.pipeline.sweeper import (
    COMMIT_CUSTOMERS,
    LAST_PART_CUSTOMERS,
    DuePages,
    commit_parts,
    sweep_shard,
    until_sent,
)
from streams.settings import Settings
from streams.state.kpis import KpiDelta
from streams.state.store import (
    OutboxEntry,
    ShardView,
    ShardWrite,
    StateStore,
    mark_field,
    offset_field,
    parse_field,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@dataclass(frozen=True, slots=True)
class AlertTopics:
    churn_risk: str
    interventions: str

    def of(self, alert: Alert) -> str:
        return self.churn_risk if isinstance(alert, ChurnRiskAlert) else self.interventions


class Scorer:
    def __init__(
        self,
        store: StateStore,
        decoder: Decoder,
        aligned_topics: set[str],
        config: ScoringConfig,
        alert_topics: AlertTopics,
        shards: int,
        clock: str,
        wall: Callable[[], float],
        retry_max_s: float = 5.0,
        max_held: int = 200_000,
    ) -> None:
        self.store = store
        self.decoder = decoder
        # Topics with exactly ``shards`` partitions: only on those is a record's partition
        # its customer's shard. Records elsewhere are always rerouted.
        self.aligned_topics = aligned_topics
        self.config = config
        self.alert_topics = alert_topics
        self.shards = shards
        self.event_clock = clock == "event"
        self.wall = wall
        self.retry_max_s = retry_max_s
        # The agent and the sweeper write the same shards; in one process they take turns
        # rather than refuse each other's commits.
        self.lock = asyncio.Lock()
        # On the event clock, records wait here until their shard's partitions have all
        # been read past them (see streams/pipeline/ordering.py); on the wall clock they never wait.
        self.buffer = EventTimeBuffer(self.shard_partitions, max_held=max_held)
        self._seq = 0
        # Alerts Kafka acknowledged: each shard's next commit takes them out of its outbox.
        self.sent_alerts = SentAlerts()
        # A sweep commits each shard's page in parts of at most this many customers.
        self.sweep_commit_customers = COMMIT_CUSTOMERS
        self.sweep_last_part_customers = LAST_PART_CUSTOMERS
        self._shard_topics = [*sorted(aligned_topics), *filter(None, [decoder.rerouted])]

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        store: StateStore,
        config: ScoringConfig,
        aligned_topics: set[str],
        *,
        clock: str | None = None,
        rerouted_topic: str | None = None,
    ) -> Scorer:
        """The scorer the settings describe (a replay overrides its clock and the topic
        its misrouted records go through)."""
        return cls(
            store,
            Decoder(*settings.input_topics, rerouted=rerouted_topic or settings.topic_rerouted),
            aligned_topics,
            config,
            AlertTopics(settings.topic_churn_risk, settings.topic_interventions),
            shards=settings.partitions,
            clock=clock or settings.clock,
            wall=time.time,
            retry_max_s=settings.redis_retry_max_s,
            max_held=settings.max_held_events,
        )

    def shard_partitions(self, shard: int) -> list[tuple[str, int]]:
        """The partitions whose records a shard owns: its number on each aligned topic."""
        return [(topic, shard) for topic in self._shard_topics]

    async def process(self, records: Sequence[Record]) -> BatchOutcome:
        """Score what can be scored now; ``outcome.done`` lists the records that may be
        acknowledged once the outcome's outputs are published."""
        outcome = BatchOutcome()
        ready: dict[int, list[Scorable]] = {}
        buffer, decode, rerouted = self.buffer, self.decoder.decode, self.decoder.rerouted
        aligned, shards = self.aligned_topics, self.shards
        for record in records:
            buffer.note_read(record)
            try:
                event = decode(record)
            except RejectedRecord as exc:
                outcome.dead_letters.append(DeadLetter(record, str(exc)))
                outcome.done.append(record)
                continue
            shard = shard_of(event.customer_id, shards)
            if record.topic != rerouted and (
                record.partition != shard or record.topic not in aligned
            ):
                source = self.decoder.source_topic(record)
                outcome.reroutes.append(Reroute(record, shard, source))
                outcome.done.append(record)
                continue
            self._seq += 1
            item = Scorable(record, event, shard, event.occurred_at.timestamp(), self._seq)
            if self.event_clock:
                buffer.add(item)
            else:
                ready.setdefault(shard, []).append(item)
        await self._score_ready(self.buffer.release if self.event_clock else lambda: ready, outcome)
        return outcome

    async def release(self) -> BatchOutcome:
        """Score waiting events that the event clock has since passed (called by a timer,
        for when no new record arrives to trigger it)."""
        outcome = BatchOutcome()
        if self.event_clock and self.buffer.held:
            await self._score_ready(self.buffer.release, outcome)
        return outcome

    async def _score_ready(
        self, take_ready: Callable[[], dict[int, list[Scorable]]], outcome: BatchOutcome
    ) -> None:
        # Events leave the buffer only under the lock, and are applied before it is let
        # go: the sweeper's clock stops at events still in the buffer, so one released
        # but not yet applied (while a sweep held the lock) would let it run ahead of them.
        async with self.lock:
            ready = take_ready()
            if ready:
                # Shards are removed from ``pending`` as they commit, so a retry after a
                # connection error re-does only the shards not committed yet.
                pending = dict(ready)
                await self.retrying(lambda: self._score(pending, outcome))
        outcome.done.extend(item.record for items in ready.values() for item in items)

    async def _score(self, pending: dict[int, list[Scorable]], outcome: BatchOutcome) -> None:
        while pending:
            wanted = {s: {i.event.customer_id for i in items} for s, items in pending.items()}
            views = await self.store.read({s: sorted(ids) for s, ids in wanted.items()})
            self._remember_marks(views.values())
            now = self.wall()
            writes: dict[int, tuple[ShardWrite, list[Alert]]] = {}
            tallies: dict[int, BatchOutcome] = {}
            for shard, items in pending.items():
                tally = tallies[shard] = BatchOutcome()
                writes[shard] = self._score_shard(views[shard], items, now, tally)
            committed = await self._commit([write for write, _ in writes.values()])
            # The events metric moves once per (topic, outcome) of the round, not per shard.
            counted = BatchOutcome()
            for shard, ids in committed.items():
                if ids is None:
                    metrics.COMMIT_CONFLICTS.inc()
                    continue
                del pending[shard]
                for (topic, kind), n in tallies[shard].by_topic.items():
                    counted.tally(topic, kind, n)
                outcome.alerts.extend(self._entries(shard, ids, *writes[shard]))
            outcome.applied += counted.applied
            outcome.duplicates += counted.duplicates
            outcome.redelivered += counted.redelivered
            for (topic, kind), n in counted.by_topic.items():
                metrics.EVENTS.labels(topic, kind).inc(n)

    async def _commit(self, writes: list[ShardWrite]) -> dict[int, list[str] | None]:
        """``store.commit``, each write also deleting its shard's ``sent_alerts``."""
        for w in writes:
            w.acked_outbox_ids = self.sent_alerts.ids(w.shard)
        committed = await self.store.commit(writes)
        for w in writes:
            if committed.get(w.shard) is not None:
                self.sent_alerts.removed(w.shard, w.acked_outbox_ids)
        return committed

    def _remember_marks(self, views: Iterable[ShardView]) -> None:
        for view in views:
            for name, mark in view.marks.items():
                self.buffer.persisted_marks[parse_field(name)] = mark

    def _score_shard(
        self,
        view: ShardView,
        items: Iterable[Scorable],
        wall_now: float,
        tally: BatchOutcome,
    ) -> tuple[ShardWrite, list[Alert]]:
        states: dict[str, CustomerState | None] = dict(view.customers)
        write = ShardWrite(shard=view.shard, expected_epoch=view.epoch)
        alerts: list[Alert] = []
        kpi = KpiDelta()  # the population KPIs move with the states, in the same commit
        config, event_clock = self.config, self.event_clock
        offsets, marks = write.offsets, write.marks
        # Per partition of the batch: (applied offset, its offset field, its mark field),
        # and per (topic, outcome) how many records (the tally, added up once).
        partitions: dict[tuple[str, int], tuple[int, str, str]] = {}
        counted: dict[tuple[str, str], int] = {}
        for item in items:
            record, event = item.record, item.event
            tp = (record.topic, record.partition)
            known = partitions.get(tp)
            if known is None:
                applied_offset = view.applied_offset(*tp)
                known = partitions[tp] = (applied_offset, offset_field(*tp), mark_field(*tp))
            applied, name, mark = known
            if record.offset <= applied:
                key = (record.topic, "redelivered")
                counted[key] = counted.get(key, 0) + 1
                continue
            offset = offsets.get(name, -1)
            offsets[name] = record.offset if record.offset > offset else offset
            now = wall_now
            if event_clock:
                # Scored at its own time: every partition of the shard has been read past
                # it, so the inactivity checks due before it can run first, safely.
                now = item.time
                latest = marks.get(mark, now)
                marks[mark] = now if now > latest else latest
            customer_id = event.customer_id
            before = states.get(customer_id)
            # positionally (no checks_until; the event time known): cheaper, once per event
            result = apply_event(before, event, now, wall_now, config, None, item.time)
            states[customer_id] = result.state
            kpi.add_events(before, result.state, now)
            key = (record.topic, "duplicate" if result.duplicate else "applied")
            counted[key] = counted.get(key, 0) + 1
            alerts.extend(result.alerts)
        for (topic, kind), n in counted.items():
            tally.tally(topic, kind, n)
        write.states = {c: s for c, s in states.items() if s is not None}
        for customer_id, state in write.states.items():
            kpi.add_customer(view.customers.get(customer_id), state)
        kpi.apply_to(write)
        write.outbox = [self._outbox_triple(a) for a in alerts]
        return write, alerts

    def _outbox_triple(self, alert: Alert) -> tuple[str, bytes, bytes]:
        # The serializer's bytes: what model_dump_json() returns decoded, without the
        # decoding and encoding again.
        value = alert.__pydantic_serializer__.to_json(alert)
        return self.alert_topics.of(alert), alert.customer_id.encode(), value

    def _entries(
        self, shard: int, ids: list[str], write: ShardWrite, alerts: list[Alert]
    ) -> list[OutboxEntry]:
        """The committed write's outbox entries (its triples as sent: each alert's JSON is
        made once), counted in the alerts metric."""
        entries = []
        # The metric moves once per (kind, level) of the write: labels() is dear per alert.
        counted: dict[tuple[str, str], int] = {}
        for entry_id, alert, (topic, key, value) in zip(ids, alerts, write.outbox, strict=True):
            level = alert.level if isinstance(alert, ChurnRiskAlert) else alert.severity
            counted[alert.kind, level] = counted.get((alert.kind, level), 0) + 1
            entries.append(OutboxEntry(shard, entry_id, topic, key, value))
        for labels, n in counted.items():
            metrics.ALERTS.labels(*labels).inc(n)
        return entries

    async def sweep(self, shards: Sequence[int], limit: int) -> tuple[list[OutboxEntry], int]:
        """Re-evaluate customers whose inactivity check is due in the given shards, at most
        ``limit`` per shard: the alerts written, and how many customers were looked at."""
        if not shards:
            return [], 0
        async with self.lock:
            return await self.retrying(lambda: self._sweep(shards, limit))

    async def _sweep(self, shards: Sequence[int], limit: int) -> tuple[list[OutboxEntry], int]:
        wall_now = self.wall()
        if self.event_clock:
            self._remember_marks((await self.store.metas(shards)).values())
            now_by_shard = {}
            for shard in shards:
                clock = self.buffer.clock(shard)
                if clock is not None:
                    now_by_shard[shard] = clock
                    metrics.WATERMARK.labels(str(shard)).set(clock)
        else:
            now_by_shard = dict.fromkeys(shards, wall_now)
        pages = DuePages(self.store, now_by_shard, limit)
        parts: list[tuple[ShardWrite, list[Alert]]] = []
        commits: list[asyncio.Future[dict[int, list[str] | None]]] = []
        largest = 0  # the largest page listed: a full one says more are due
        try:
            async for page in pages:
                view, blobs = page.view, page.blobs
                largest = max(largest, page.listed)
                now = now_by_shard[view.shard]
                previous: ShardWrite | None = None  # the page's part before this one
                last = self.sweep_last_part_customers if pages.exhausted else None
                for chunk in commit_parts(blobs, self.sweep_commit_customers, last):
                    write, alerts = sweep_shard(view, chunk, now, wall_now, self.config)
                    write.outbox = [self._outbox_triple(a) for a in alerts]
                    if previous is not None:
                        # Committed on the epoch the part before it left (a commit moves it
                        # on by one; that part changed none of these customers), or not at
                        # all if that one did not apply.
                        if (await commits[-1])[view.shard] is None:
                            break  # swept again
                        write.expected_epoch = str(int(previous.expected_epoch) + 1)
                    parts.append((write, alerts))
                    previous = write
                    # Sent before the next part is scored, so Redis runs this part's script
                    # meanwhile (each part's commit is atomic on its own).
                    commits.append(asyncio.ensure_future(self._commit([write])))
                    await until_sent()
                metrics.SWEPT.inc(len(blobs))
        finally:
            await pages.aclose()
            # Every commit sent is waited for, even when scoring a later part failed.
            replies = await asyncio.gather(*commits, return_exceptions=True)
        entries: list[OutboxEntry] = []
        for (write, alerts), reply in zip(parts, replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply
            ids = reply[write.shard]
            if ids is None:
                metrics.COMMIT_CONFLICTS.inc()  # swept again on the next tick
                continue
            entries.extend(self._entries(write.shard, ids, write, alerts))
        return entries, largest

    async def retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry while Redis is unreachable: nothing is acknowledged meanwhile, so Kafka
        offsets are never committed past what Redis has applied."""
        delay = 0.05
        while True:
            try:
                return await call()
            except RETRYABLE as exc:
                metrics.REDIS_RETRIES.inc()
                log.warning("Redis unavailable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)
