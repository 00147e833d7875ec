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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import redis.exceptions

from schemas.alerts import ChurnRiskAlert
from schemas.events import InputEvent
from scoring.config import ScoringConfig
from scoring.engine import Alert, apply_event, evaluate_due
from scoring.state import CustomerState
from streams import metrics
from streams.intake import Decoder, Record, RejectedRecord, shard_of
from streams.store import (
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
class DeadLetter:
    record: Record
    reason: str


@dataclass(frozen=True, slots=True)
class Reroute:
    record: Record
    shard: int
    source_topic: str


@dataclass(slots=True)
class BatchOutcome:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    reroutes: list[Reroute] = field(default_factory=list)
    alerts: list[OutboxEntry] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    # (topic, outcome) -> records, for the events metric
    by_topic: dict[tuple[str, str], int] = field(default_factory=dict)

    def tally(self, topic: str, outcome: str) -> None:
        key = (topic, outcome)
        self.by_topic[key] = self.by_topic.get(key, 0) + 1


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
        # Highest offset read per (topic, partition), whatever became of the record, and
        # the broker's end offset (set by the app from its consumer); for the event clock.
        self.consumed: dict[tuple[str, int], int] = {}
        self.highwater: Callable[[str, int], int | None] = lambda topic, partition: None

    async def process(self, records: Sequence[Record]) -> BatchOutcome:
        outcome = BatchOutcome()
        local: dict[int, list[tuple[Record, InputEvent]]] = {}
        for record in records:
            tp = (record.topic, record.partition)
            self.consumed[tp] = max(self.consumed.get(tp, -1), record.offset)
            try:
                event = self.decoder.decode(record)
            except RejectedRecord as exc:
                outcome.dead_letters.append(DeadLetter(record, str(exc)))
                continue
            shard = shard_of(event.customer_id, self.shards)
            if record.topic != self.decoder.rerouted and (
                record.partition != shard or record.topic not in self.aligned_topics
            ):
                source = self.decoder.source_topic(record)
                outcome.reroutes.append(Reroute(record, shard, source))
                continue
            local.setdefault(shard, []).append((record, event))
        if local:
            async with self.lock:
                await self.retrying(lambda: self._score(local, outcome))
        return outcome

    async def _score(
        self, groups: Mapping[int, list[tuple[Record, InputEvent]]], outcome: BatchOutcome
    ) -> None:
        pending = dict(groups)
        while pending:
            wanted = {s: {e.customer_id for _, e in items} for s, items in pending.items()}
            views = await self.store.read({s: sorted(ids) for s, ids in wanted.items()})
            now = self.wall()
            writes: list[ShardWrite] = []
            tallies: dict[int, BatchOutcome] = {}
            alerts: dict[int, list[Alert]] = {}
            for shard, items in pending.items():
                tally = tallies[shard] = BatchOutcome()
                write, alerts[shard] = self._score_shard(views[shard], items, now, tally)
                writes.append(write)
            committed = await self.store.commit(writes)
            for shard, ids in committed.items():
                if ids is None:
                    metrics.COMMIT_CONFLICTS.inc()
                    continue
                del pending[shard]
                tally = tallies[shard]
                outcome.applied += tally.applied
                outcome.duplicates += tally.duplicates
                outcome.redelivered += tally.redelivered
                for (topic, kind), n in tally.by_topic.items():
                    metrics.EVENTS.labels(topic, kind).inc(n)
                outcome.alerts.extend(self._entries(shard, ids, alerts[shard]))

    def _score_shard(
        self,
        view: ShardView,
        items: Iterable[tuple[Record, InputEvent]],
        wall_now: float,
        tally: BatchOutcome,
    ) -> tuple[ShardWrite, list[Alert]]:
        states: dict[str, CustomerState | None] = dict(view.customers)
        write = ShardWrite(shard=view.shard, expected_epoch=view.epoch)
        marks = dict(view.marks)
        pending = self.pending_partitions(view) if self.event_clock else set()
        checks_until: float | None = None
        alerts: list[Alert] = []
        for record, event in items:
            if record.offset <= view.applied_offset(record.topic, record.partition):
                tally.redelivered += 1
                tally.tally(record.topic, "redelivered")
                continue
            name = offset_field(record.topic, record.partition)
            write.offsets[name] = max(write.offsets.get(name, -1), record.offset)
            now = wall_now
            if self.event_clock:
                # On the event clock an event is scored at its own time, so how fast each
                # topic is read does not change a score or an alert.
                now = event.occurred_at.timestamp()
                mark = mark_field(record.topic, record.partition)
                marks[mark] = write.marks[mark] = max(marks.get(mark, now), now)
                checks_until = watermark(marks, pending)
            result = apply_event(
                states.get(event.customer_id), event, now, wall_now, self.config, checks_until
            )
            states[event.customer_id] = result.state
            if result.duplicate:
                tally.duplicates += 1
                tally.tally(record.topic, "duplicate")
            else:
                tally.applied += 1
                tally.tally(record.topic, "applied")
            alerts.extend(result.alerts)
        write.states = {c: s for c, s in states.items() if s is not None}
        write.outbox = [self._outbox_triple(a) for a in alerts]
        return write, alerts

    def _outbox_triple(self, alert: Alert) -> tuple[str, bytes, bytes]:
        return (
            self.alert_topics.of(alert),
            alert.customer_id.encode(),
            alert.model_dump_json().encode(),
        )

    def _entries(self, shard: int, ids: list[str], alerts: list[Alert]) -> list[OutboxEntry]:
        entries = []
        for entry_id, alert in zip(ids, alerts, strict=True):
            topic, key, value = self._outbox_triple(alert)
            level = alert.level if isinstance(alert, ChurnRiskAlert) else alert.severity
            metrics.ALERTS.labels(alert.kind, level).inc()
            entries.append(OutboxEntry(shard, entry_id, topic, key, value))
        return entries

    async def sweep(self, shards: Sequence[int], limit: int) -> list[OutboxEntry]:
        """Re-evaluate customers whose inactivity check is due in the given shards."""
        if not shards:
            return []
        async with self.lock:
            return await self.retrying(lambda: self._sweep(shards, limit))

    async def _sweep(self, shards: Sequence[int], limit: int) -> list[OutboxEntry]:
        wall_now = self.wall()
        if self.event_clock:
            metas = await self.store.metas(shards)
            now_by_shard = {}
            for shard, view in metas.items():
                clock = self.shard_clock(view)
                if clock is not None:
                    now_by_shard[shard] = clock
                    metrics.WATERMARK.labels(str(shard)).set(clock)
        else:
            now_by_shard = dict.fromkeys(shards, wall_now)
        due = await self.store.due_customers(list(now_by_shard), now_by_shard, limit)
        if not due:
            return []
        views = await self.store.read(due)
        writes: list[ShardWrite] = []
        alerts: dict[int, list[Alert]] = {}
        for shard, view in views.items():
            write = ShardWrite(shard=shard, expected_epoch=view.epoch)
            alerts[shard] = []
            for customer_id, state in view.customers.items():
                result = evaluate_due(state, now_by_shard[shard], wall_now, self.config)
                write.states[customer_id] = result.state
                alerts[shard].extend(result.alerts)
            write.outbox = [self._outbox_triple(a) for a in alerts[shard]]
            writes.append(write)
            metrics.SWEPT.inc(len(view.customers))
        committed = await self.store.commit(writes)
        entries: list[OutboxEntry] = []
        for shard, ids in committed.items():
            if ids is None:
                metrics.COMMIT_CONFLICTS.inc()  # swept again on the next tick
                continue
            entries.extend(self._entries(shard, ids, alerts[shard]))
        return entries

    def pending_partitions(self, view: ShardView) -> set[str]:
        """Mark fields of the shard's partitions that still have records to read."""
        pending = set()
        for name in view.marks:
            topic, partition = parse_field(name)
            highwater = self.highwater(topic, partition)
            handled = max(
                self.consumed.get((topic, partition), -1),
                view.offsets.get(offset_field(topic, partition), -1),
            )
            if highwater is None or handled + 1 < highwater:
                pending.add(name)
        return pending

    def shard_clock(self, view: ShardView) -> float | None:
        """The event clock of a shard, for the sweeper (see ``watermark``)."""
        return watermark(view.marks, self.pending_partitions(view))

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


def watermark(marks: Mapping[str, float], pending: set[str]) -> float | None:
    """Event time up to which every partition of a shard has been read.

    Each partition is assumed to be written roughly in event-time order, so its latest
    event time (its mark) is how far it has been read. While some partitions still have
    records to read, the shard is only as far as the slowest of them: a customer is not
    silent while their events wait in a slower topic. Once all are read, it is the latest.
    """
    behind = [marks[name] for name in pending if name in marks]
    if behind:
        return min(behind)
    return max(marks.values(), default=None)
