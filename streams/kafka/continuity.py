"""Every record of an input partition is handed to the scorer, in offset order, with none
skipped; the group's committed offset never passes a record nobody finished.

Faust (0.15.3) can step over records without anyone noticing:

- its fetch loop discards the rest of a fetched batch when the consumer generation changes
  or flow stops mid-batch, and records read before a rebalance are dropped unacknowledged;
  the partition is read again only if a seek follows, which it does not always do before
  later records of the same partition are read;
- it records every jump in offsets as a gap (offsets that do not exist: transaction
  markers, compaction) *including the record after the jump*, and fills gaps in as
  acknowledged when it commits;
- ``Consumer._new_offset`` commits a run of acknowledged offsets that starts one past the
  committed offset, so the record at the committed offset itself can be passed over.

The chaos suite saw the group's committed offset one record ahead of Redis after a rebalance.
So on the batch path this module keeps, per input partition, the next offset it must hand
over, and:

- after every seek (Faust's, or the repositioning from Redis) the first record read is the
  first that exists at or after the seek position: the offsets in between are proven not
  to exist and become Faust's gap, so commits may pass them;
- a record further on than the next offset, with no seek in between, means records were
  skipped: the partition is sought back to the next offset and read again (duplicates are
  harmless: Redis applies each offset once). A range that does not exist shows up as the
  first record after that seek, so it costs one fetch, once;
- records fetched before a seek of their partition are dropped (the seek re-reads them);
- a commit never starts above the committed offset: the run must begin at it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from faust.utils.functional import consecutive_numbers

from streams import metrics

log = logging.getLogger(__name__)


class ReadContinuity:
    """Seek epochs and next offsets of the input partitions, for one Faust consumer."""

    def __init__(self, consumer: Any, topics: Iterable[str]) -> None:
        self.consumer = consumer
        self.topics = set(topics)
        # Bumped on every seek of a partition: records fetched at an older epoch are stale.
        self.epochs: dict[Any, int] = {}
        # Where the partition was last sought to (None: Kafka's choice, e.g. the earliest
        # record); its first record read after the seek settles which offsets exist.
        self.sought: dict[Any, int | None] = {}
        self.next_offset: dict[Any, int] = {}
        self._held_back: dict[Any, int] = {}  # the committed offset last logged as held

    def note_seeks_to_read_offsets(self, assigned: Iterable[Any], read_offset: Any) -> None:
        """Faust sought every assigned partition to its committed offset, which it keeps
        as the partition's read offset."""
        for tp in assigned:
            # None: no committed offset, and aiokafka then leaves the position where it
            # was (not a seek: the partition's next offset still holds).
            if tp.topic in self.topics and read_offset.get(tp) is not None:
                self.note_seek(tp, read_offset[tp])

    def note_seek(self, tp: Any, offset: int | None) -> None:
        if tp.topic not in self.topics:
            return
        self.epochs[tp] = self.epochs.get(tp, 0) + 1
        self.sought[tp] = offset
        self.next_offset.pop(tp, None)

    def forget(self, tps: Iterable[Any]) -> None:
        for tp in tps:
            self.epochs.pop(tp, None)
            self.sought.pop(tp, None)
            self.next_offset.pop(tp, None)

    async def tag(self, fetched: list[Any], before: dict[Any, int]) -> list[tuple[Any, int]]:
        """``fetched``, each message with its partition's seek epoch; ``before``: the epochs
        when the fetch began. A partition sought since may have records here from either
        side of the seek: they are dropped and the partition sought again, so the first
        record after the seek is known for sure."""
        epochs = self.epochs
        sought_since = {tp for tp, e in epochs.items() if before.get(tp, 0) != e}
        sought_since.update(tp for tp in before if tp not in epochs)  # forgotten meanwhile
        dropped: dict[Any, int] = {}
        tagged = []
        for message in fetched:
            tp = message.tp
            if tp in sought_since:
                dropped[tp] = min(dropped.get(tp, message.offset), message.offset)
            else:
                tagged.append((message, before.get(tp, 0)))
        for tp, lowest in dropped.items():
            log.info(
                "%s:%d: fetched across a seek from %d: read again", tp.topic, tp.partition, lowest
            )
            if tp in self.sought:
                start = self.sought[tp]
                await self.consumer.seek(tp, lowest if start is None else start)
        return tagged

    async def admit(self, fetched: Iterable[tuple[Any, int]]) -> list[Any]:
        """The messages of ``fetched`` (each with the seek epoch of its partition when it
        was fetched) to hand to the scorer, in order; seeks back partitions found skipped."""
        admitted: list[Any] = []
        repair: dict[Any, int] = {}
        for message, epoch in fetched:
            tp, offset = message.tp, message.offset
            if tp in repair or epoch != self.epochs.get(tp, 0):
                continue  # fetched before a seek of its partition: read again after it
            if tp in self.sought:
                start = self.sought.pop(tp)
                if start is not None and offset < start:
                    self.sought[tp] = start
                    continue
                if start is not None and offset > start:
                    self._absent(tp, start, offset)
            else:
                expected = self.next_offset.get(tp)
                if expected is not None and offset > expected:
                    log.warning(
                        "%s:%d: read %d where %d was next, with no seek in between: "
                        "reading again from %d",
                        tp.topic, tp.partition, offset, expected, expected,
                    )  # fmt: skip
                    repair[tp] = expected
                    continue
                if expected is not None and offset < expected:
                    continue  # handed over already
            self.next_offset[tp] = offset + 1
            admitted.append(message)
        for tp, offset in repair.items():
            metrics.INPUT_REREADS.inc()
            await self.consumer.seek(tp, offset)
        return admitted

    def _absent(self, tp: Any, start: int, first: int) -> None:
        """Offsets ``start`` .. ``first - 1`` do not exist: commits may pass them."""
        log.info(
            "%s:%d: offsets %d..%d do not exist (the first read after the seek to %d is %d)",
            tp.topic, tp.partition, start, first - 1, start, first,
        )  # fmt: skip
        gaps = self.consumer._gap[tp]
        gaps.addi(start, first)
        gaps.merge_overlaps()

    def new_offset(self, tp: Any) -> int | None:
        """Faust's ``Consumer._new_offset`` (0.15.3), except that the run of finished
        offsets must start at the committed offset, not one past it."""
        consumer = self.consumer
        acked: list[int] = consumer._acked[tp]
        if not acked:
            return None
        gaps = consumer._gap[tp]
        max_offset = max(acked)
        if gaps:
            candidates = sorted(gaps.overlap(0, max_offset + 1), key=lambda x: x.begin)
            if candidates:
                filled = [o for entry in candidates for o in range(entry.begin, entry.end)]
                acked.extend(filled)
                gaps.chop(0, max(filled[-1], max_offset) + 1)
        committed: int | None = consumer._committed_offset[tp]
        if committed is not None:
            # Below the committed offset (it may have moved back to Redis's position):
            # finished long ago; kept, they would stop the run below from starting.
            below = {o for o in acked if o < committed}
            consumer._acked_index[tp].difference_update(below)
            acked[:] = sorted(set(acked) - below)
            if not acked or acked[0] != committed:
                if acked and self._held_back.get(tp) != committed:
                    self._held_back[tp] = committed
                    log.info(
                        "%s:%d: not committing past %d: it is not finished (first finished "
                        "after it: %d)", tp.topic, tp.partition, committed, acked[0],
                    )  # fmt: skip
                return None
        else:
            acked[:] = sorted(set(acked))
        batch = next(consecutive_numbers(acked))
        acked[: len(batch)] = []
        consumer._acked_index[tp].difference_update(batch)
        return int(batch[-1]) + 1
