"""Acknowledging each partition's records in offset order.

Faust commits, per partition, the end of the first run of consecutive acknowledged
offsets, and lets that run start one past its committed offset (faust-streaming 0.15,
``Consumer._new_offset``: it takes the committed offset for the last record processed,
where Kafka means the next one to read). So a record acknowledged while the record just
before it still waits - a dead letter behind an event held for the event clock - lets the
group commit past the waiting record, which a crash would then lose (found by the chaos
suite: the group's offset ahead of what Redis had applied). Records are therefore
acknowledged only once every record read before them on their partition is finished.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from streams.intake import Record

TP = tuple[str, int]
Key = tuple[str, int, int]


class InOrderAcks:
    def __init__(self) -> None:
        # (topic, partition, offset) -> the stream event, for every record read and not
        # acknowledged yet (finished or not).
        self.events: dict[Key, Any] = {}
        self._offsets: dict[TP, list[int]] = {}  # heap of offsets read, per partition
        self._finished: dict[TP, set[int]] = {}

    def __len__(self) -> int:
        return len(self.events)

    def read(self, record: Record, event: Any) -> None:
        key = (record.topic, record.partition, record.offset)
        if key not in self.events:
            heapq.heappush(self._offsets.setdefault(key[:2], []), record.offset)
        # A record read again (after a seek back) is acknowledged through its newest event.
        self.events[key] = event

    def known(self, records: Iterable[Record]) -> list[Record]:
        """Those of ``records`` read and not acknowledged yet (a record of a partition
        revoked since it was read is not: its next owner reads it again)."""
        events = self.events
        return [r for r in records if (r.topic, r.partition, r.offset) in events]

    def finish(self, records: Iterable[Record]) -> list[Any]:
        """Note ``records`` as finished; the events that may be acknowledged now, each
        partition's in offset order."""
        touched: set[TP] = set()
        for r in records:
            if (r.topic, r.partition, r.offset) in self.events:
                self._finished.setdefault((r.topic, r.partition), set()).add(r.offset)
                touched.add((r.topic, r.partition))
        ready = []
        for tp in touched:
            offsets, finished = self._offsets[tp], self._finished[tp]
            while offsets and offsets[0] in finished:
                offset = heapq.heappop(offsets)
                finished.discard(offset)
                ready.append(self.events.pop((*tp, offset)))
        return ready

    def forget(self, tp: TP) -> None:
        """The partition was revoked: its records will be read again by its next owner."""
        self._offsets.pop(tp, None)
        self._finished.pop(tp, None)
        for key in [k for k in self.events if k[:2] == tp]:
            del self.events[key]
