"""Continuity of the input partitions on the batch path: which records reach the scorer
after seeks, skips and stale fetches, and where Faust may commit (stand-in consumer holding
the same bookkeeping fields as Faust's; the real consumer is under every worker test)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pytest
from faust.types import TP
from intervaltree import IntervalTree

from streams.kafka.continuity import ReadContinuity

pytestmark = pytest.mark.timeout(10)

P0 = TP("clicks", 0)
P1 = TP("clicks", 1)


@dataclass(frozen=True)
class Message:
    tp: TP
    offset: int


class Consumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[TP, int]] = []
        self._gap: defaultdict[TP, IntervalTree] = defaultdict(IntervalTree)
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self.continuity: ReadContinuity | None = None

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        assert self.continuity is not None
        self.continuity.note_seek(tp, offset)

    def ack(self, tp: TP, *offsets: int) -> None:
        for offset in offsets:
            self._acked[tp].append(offset)
            self._acked_index[tp].add(offset)


def reading(*topics: str) -> tuple[Consumer, ReadContinuity]:
    consumer = Consumer()
    continuity = ReadContinuity(consumer, topics or ("clicks",))
    consumer.continuity = continuity
    return consumer, continuity


def read(continuity: ReadContinuity, tp: TP, *offsets: int) -> list[tuple[Message, int]]:
    return [(Message(tp, o), continuity.epochs.get(tp, 0)) for o in offsets]


def offsets(messages: list[Message]) -> list[tuple[int, int]]:
    return [(m.tp.partition, m.offset) for m in messages]


async def test_records_in_order_are_handed_over() -> None:
    _, continuity = reading()
    batch = read(continuity, P0, 0, 1, 2) + read(continuity, P1, 5, 6)
    assert offsets(await continuity.admit(batch)) == [(0, 0), (0, 1), (0, 2), (1, 5), (1, 6)]
    assert offsets(await continuity.admit(read(continuity, P0, 3))) == [(0, 3)]


async def test_a_record_skipped_without_a_seek_is_read_again() -> None:
    consumer, continuity = reading()
    await continuity.admit(read(continuity, P0, 10, 11))
    # 12 never came (dropped on a rebalance with no seek after it): 13 and 14 wait.
    assert offsets(await continuity.admit(read(continuity, P0, 13, 14))) == []
    assert consumer.seeks == [(P0, 12)]
    assert not consumer._gap[P0]  # nothing may be committed past 12
    assert offsets(await continuity.admit(read(continuity, P0, 12, 13))) == [(0, 12), (0, 13)]


async def test_the_first_record_after_a_seek_proves_the_offsets_before_it_absent() -> None:
    consumer, continuity = reading()
    await consumer.seek(P0, 20)
    # 20 and 21 do not exist (transaction markers, compaction): the broker starts at 22.
    assert offsets(await continuity.admit(read(continuity, P0, 22, 23))) == [(0, 22), (0, 23)]
    assert sorted((i.begin, i.end) for i in consumer._gap[P0]) == [(20, 22)]
    assert consumer.seeks == [(P0, 20)]  # no repair


async def test_a_gap_mid_partition_costs_one_seek_then_is_proven() -> None:
    consumer, continuity = reading()
    await continuity.admit(read(continuity, P0, 0, 1))
    assert await continuity.admit(read(continuity, P0, 4)) == []
    assert offsets(await continuity.admit(read(continuity, P0, 4, 5))) == [(0, 4), (0, 5)]
    assert consumer.seeks == [(P0, 2)]
    assert sorted((i.begin, i.end) for i in consumer._gap[P0]) == [(2, 4)]


async def test_records_fetched_before_a_seek_of_their_partition_are_dropped() -> None:
    consumer, continuity = reading()
    stale = read(continuity, P0, 7, 8) + read(continuity, P1, 3)
    await consumer.seek(P0, 5)
    assert offsets(await continuity.admit(stale)) == [(1, 3)]
    assert offsets(await continuity.admit(read(continuity, P0, 5, 6))) == [(0, 5), (0, 6)]


async def test_records_below_the_seek_position_are_dropped_until_it_is_reached() -> None:
    consumer, continuity = reading()
    await consumer.seek(P0, 5)
    assert offsets(await continuity.admit(read(continuity, P0, 3, 4, 5, 6))) == [(0, 5), (0, 6)]
    assert not consumer._gap[P0]


async def test_a_fetch_across_a_seek_is_dropped_and_sought_again() -> None:
    consumer, continuity = reading()
    before = dict(continuity.epochs)
    await consumer.seek(P0, 40)  # while the fetch below was under way
    fetched = [Message(P0, 52), Message(P1, 9), Message(P0, 53)]
    tagged = await continuity.tag(fetched, before)
    assert tagged == [(Message(P1, 9), 0)]  # P1 was not sought: kept, at its epoch
    assert consumer.seeks == [(P0, 40), (P0, 40)]  # P0: sought again to where it was sought
    assert offsets(await continuity.admit(read(continuity, P0, 40))) == [(0, 40)]


def test_faust_commits_a_run_only_from_the_committed_offset() -> None:
    consumer, continuity = reading()
    consumer._committed_offset[P0] = 100
    consumer.ack(P0, 101, 102)  # Faust's own rule lets this run commit 103, passing 100
    assert continuity.new_offset(P0) is None
    consumer.ack(P0, 100)
    assert continuity.new_offset(P0) == 103
    assert consumer._acked[P0] == [] and consumer._acked_index[P0] == set()


def test_commits_pass_proven_gaps_and_ignore_offsets_below_the_committed_one() -> None:
    consumer, continuity = reading()
    consumer._committed_offset[P0] = 10
    consumer.ack(P0, 3, 4, 10, 11, 14, 20)
    consumer._gap[P0].addi(12, 14)
    assert continuity.new_offset(P0) == 15
    assert consumer._acked[P0] == [20]
    assert consumer._acked_index[P0] == {20}


def test_without_a_committed_offset_the_first_run_is_committed() -> None:
    consumer, continuity = reading()
    consumer.ack(P0, 5, 6, 8)
    assert continuity.new_offset(P0) == 7
    assert continuity.new_offset(TP("clicks", 3)) is None
