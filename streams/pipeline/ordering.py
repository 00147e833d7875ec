"""Event-time order on the event clock: each partition's records wait until every partition
of their shard has been read past them, then are applied in time order.

Without this, a replay that reads clickstream faster than purchases would apply a
customer's events out of order across topics, and whether their silence crossed a
threshold before their next event would depend on read speed: two runs of the same
history could alert differently. Each partition is assumed to be written in roughly
event-time order (a late record is still applied, just not reordered).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter

from schemas.events import InputEvent
from scoring.state import slot_init
from streams.pipeline.intake import Record

log = logging.getLogger(__name__)

TP = tuple[str, int]


@slot_init  # one per event
@dataclass(frozen=True, slots=True)
class Scorable:
    """A decoded record on its owner shard, ready to score (or waiting to be)."""

    record: Record
    event: InputEvent
    shard: int
    time: float
    seq: int


# Event time, then the order read in: a C key function (a backlog sorts many items).
_EVENT_TIME_ORDER = attrgetter("time", "seq")


def no_consumer_information(topic: str, partition: int) -> int | None:
    return None


class EventTimeBuffer:
    def __init__(self, shard_partitions: Callable[[int], Iterable[TP]], max_held: int) -> None:
        self.shard_partitions = shard_partitions
        self.max_held = max_held
        self.queues: dict[TP, deque[Scorable]] = {}
        self.held = 0
        # Latest event time read per partition (in this process), and as last persisted.
        self.read_marks: dict[TP, float] = {}
        self.persisted_marks: dict[TP, float] = {}
        self.consumed: dict[TP, int] = {}
        # From the consumer: the partition's end offset and the group's committed offset.
        # ``None`` from highwater means no consumer information: the partition counts as
        # fully read (tests that feed records directly).
        self.highwater: Callable[[str, int], int | None] = no_consumer_information
        self.committed: Callable[[str, int], int | None] = no_consumer_information

    def note_read(self, record: Record) -> None:
        tp = (record.topic, record.partition)
        consumed = self.consumed.get(tp, -1)
        self.consumed[tp] = record.offset if record.offset > consumed else consumed

    def add(self, item: Scorable) -> None:
        record = item.record
        tp = (record.topic, record.partition)
        queue = self.queues.get(tp)
        if queue is None:
            queue = self.queues[tp] = deque()
        queue.append(item)
        self.held += 1
        self.read_marks[tp] = max(self.read_marks.get(tp, item.time), item.time)

    def caught_up(self, tp: TP) -> bool:
        """True when no record of the partition is left for this process to read."""
        end = self.highwater(*tp)
        if end is None:
            return True
        read = max(self.consumed.get(tp, -1), (self.committed(*tp) or 0) - 1)
        return read + 1 >= end

    def _mark(self, tp: TP) -> float | None:
        marks = [m for m in (self.read_marks.get(tp), self.persisted_marks.get(tp)) if m]
        return max(marks) if marks else None

    def watermark(self, shard: int) -> float | None:
        """Event time up to which every partition of the shard has been read: the slowest
        partition that still has records to read, or the latest once all are read."""
        behind: list[float] = []
        known: list[float] = []
        for tp in self.shard_partitions(shard):
            mark = self._mark(tp)
            if not self.caught_up(tp):
                if mark is None:
                    return None  # records to read, but how far in time they go is unknown
                behind.append(mark)
            if mark is not None:
                known.append(mark)
        if behind:
            return min(behind)
        return max(known, default=None)

    def clock(self, shard: int) -> float | None:
        """How far in event time the shard's customers can be judged silent: up to the
        watermark, and never past an event still waiting to be applied."""
        watermark = self.watermark(shard)
        if watermark is None:
            return None
        waiting = [
            item.time for tp in self.shard_partitions(shard) for item in self.queues.get(tp, ())
        ]
        return min([watermark, *waiting])

    def release(self) -> dict[int, list[Scorable]]:
        """Events whose time the watermark has passed, per shard, in event-time order.
        Each partition releases a prefix of its queue, so offsets are applied in order."""
        ready: dict[int, list[Scorable]] = {}
        watermarks: dict[int, float | None] = {}
        overfull = self.held > self.max_held
        for queue in self.queues.values():
            if not queue:
                continue
            shard = queue[0].shard
            if shard not in watermarks:
                watermarks[shard] = self.watermark(shard)
            limit = watermarks[shard]
            while queue and (overfull or (limit is not None and queue[0].time <= limit)):
                ready.setdefault(shard, []).append(queue.popleft())
                self.held -= 1
                overfull = self.held > self.max_held
        if overfull:
            log.warning("more than %d events wait for the event clock", self.max_held)
        for items in ready.values():
            items.sort(key=_EVENT_TIME_ORDER)
        return ready

    def forget(self, partitions: Iterable[TP]) -> None:
        """Drop what was read from partitions this worker no longer owns: unacknowledged,
        they will be read again by their new owner."""
        for tp in partitions:
            queue = self.queues.pop(tp, None)
            self.held -= len(queue) if queue else 0
            self.read_marks.pop(tp, None)
            self.consumed.pop(tp, None)
