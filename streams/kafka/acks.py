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

from streams.pipeline.intake import Record

TP = tuple[str, int]


class InOrderAcks:
    """Kept per partition (offset -> token): the worker reads and finishes records a
    batch at a time, and a key per record made of its partition and offset cost as much
    as the bookkeeping itself."""

    def __init__(self) -> None:
        # Per partition: offset -> the stream event, for every record read and not
        # acknowledged yet (finished or not); a heap of those offsets; the finished ones.
        self._tokens: dict[TP, dict[int, Any]] = {}
        self._offsets: dict[TP, list[int]] = {}
        self._finished: dict[TP, set[int]] = {}

    def __len__(self) -> int:
        return sum(map(len, self._tokens.values()))

    def first_pending(self) -> dict[TP, int]:
        """Per partition with records read and not acknowledged yet, the lowest of their
        offsets (the top of its heap)."""
        return {tp: offsets[0] for tp, offsets in self._offsets.items() if offsets}

    def read_all(self, records: Iterable[Record], events: Iterable[Any]) -> None:
        """Note each record as read, with the event that acknowledges it."""
        all_tokens = self._tokens
        for record, event in zip(records, events, strict=True):
            tp = (record.topic, record.partition)
            tokens = all_tokens.get(tp)
            if tokens is None:
                tokens = all_tokens[tp] = {}
                self._offsets[tp], self._finished[tp] = [], set()
            offset = record.offset
            if offset not in tokens:
                heapq.heappush(self._offsets[tp], offset)
            # A record read again (after a seek back) is acknowledged through its newest event.
            tokens[offset] = event

    def known(self, records: Iterable[Record]) -> list[Record]:
        """Those of ``records`` read and not acknowledged yet (a record of a partition
        revoked since it was read is not: its next owner reads it again)."""
        all_tokens = self._tokens
        return [r for r in records if r.offset in all_tokens.get((r.topic, r.partition), ())]

    def finish(self, records: Iterable[Record]) -> list[Any]:
        """Note ``records`` as finished; the events that may be acknowledged now, each
        partition's in offset order."""
        all_tokens, all_finished = self._tokens, self._finished
        touched: set[TP] = set()
        for r in records:
            tp = (r.topic, r.partition)
            tokens = all_tokens.get(tp)
            if tokens is not None and r.offset in tokens:
                all_finished[tp].add(r.offset)
                touched.add(tp)
        ready = []
        for tp in touched:
            offsets, finished, tokens = self._offsets[tp], all_finished[tp], all_tokens[tp]
            while offsets and offsets[0] in finished:
                offset = heapq.heappop(offsets)
                finished.discard(offset)
                ready.append(tokens.pop(offset))
        return ready

    def forget(self, tp: TP) -> None:
        """The partition was revoked: its records will be read again by its next owner."""
        self._tokens.pop(tp, None)
        self._offsets.pop(tp, None)
        self._finished.pop(tp, None)
