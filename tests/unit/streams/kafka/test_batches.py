"""The batch reader's hand-over rules, with stand-ins for the Faust app (pure logic: which
messages reach the scorer, in what lists, and when the fetch loop must wait). The path
through a real consumer is covered by every worker test in tests/integration."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.kafka.batches import BatchReader

pytestmark = pytest.mark.timeout(10)


@dataclass(frozen=True)
class Message:
    offset: int
    generation_id: int = 1
    tp: str = "t0"


@dataclass
class FlowControl:
    active: bool = True

    def is_active(self) -> bool:
        return self.active


class Consumer:
    """Seeks are what the continuity checks ask of the consumer here."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int]] = []

    async def seek(self, tp: str, offset: int) -> None:
        self.seeks.append((tp, offset))


@dataclass
class App:
    consumer: Consumer = field(default_factory=Consumer)
    consumer_generation_id: int = 1
    flow_control: FlowControl = field(default_factory=FlowControl)
    should_stop: bool = False


class Scorer:
    def __init__(self, app: App, stop_after: int) -> None:
        self.app, self.stop_after = app, stop_after
        self.batches: list[list[int]] = []

    async def handle(self, messages: list[Any]) -> None:
        self.batches.append([m.offset for m in messages])
        if sum(map(len, self.batches)) >= self.stop_after:
            self.app.should_stop = True


def fetched(messages: Iterable[Message], epoch: int = 0) -> list[tuple[Message, int]]:
    """Messages as the fetch loop hands them over: with their partition's seek epoch."""
    return [(m, epoch) for m in messages]


async def test_full_batches_go_at_once_and_the_rest_after_the_wait() -> None:
    app = App()
    scorer = Scorer(app, stop_after=5)
    reader = BatchReader(app, size=2, within=0.05, handle=scorer.handle)
    await reader.put(fetched(Message(i) for i in range(5)))
    await asyncio.wait_for(reader.run(), 5)
    assert scorer.batches == [[0, 1], [2, 3], [4]]


async def test_messages_of_an_earlier_generation_are_skipped_unacknowledged() -> None:
    app = App(consumer_generation_id=2)
    scorer = Scorer(app, stop_after=2)
    reader = BatchReader(app, size=10, within=0.01, handle=scorer.handle)
    await reader.put(fetched([Message(0, 1), Message(0, 2), Message(1, 2), Message(1, 1)]))
    await asyncio.wait_for(reader.run(), 5)
    assert scorer.batches == [[0, 1]]


async def test_nothing_is_handed_over_while_a_rebalance_is_under_way() -> None:
    app = App(flow_control=FlowControl(active=False))
    scorer = Scorer(app, stop_after=1)
    reader = BatchReader(app, size=10, within=0.01, handle=scorer.handle)
    await reader.put(fetched([Message(0), Message(1)]))
    run = asyncio.create_task(reader.run())
    await asyncio.wait_for(reader._taken.wait(), 5)  # the reader took the batch...
    assert scorer.batches == [] and reader.pending == []  # ...and dropped it: read again
    app.flow_control.active = True
    await reader.put(fetched([Message(2)]))
    await asyncio.wait_for(run, 5)
    assert scorer.batches == [[2]]


async def test_the_fetch_loop_waits_while_four_batches_are_pending() -> None:
    app = App()
    scorer = Scorer(app, stop_after=9)
    reader = BatchReader(app, size=2, within=0.01, handle=scorer.handle)
    await reader.put(fetched(Message(i) for i in range(7)))  # under 4 x 2: returns
    blocked = asyncio.create_task(reader.put(fetched([Message(7), Message(8)])))
    await asyncio.sleep(0)  # it runs up to its wait; nothing else can take messages
    assert not blocked.done()
    run = asyncio.create_task(reader.run())
    await asyncio.wait_for(blocked, 5)
    await asyncio.wait_for(run, 5)
    assert [o for b in scorer.batches for o in b] == list(range(9))


async def test_revoked_partitions_lose_their_waiting_messages() -> None:
    app = App()
    reader = BatchReader(app, size=10, within=0.01, handle=Scorer(app, 1).handle)
    await reader.put(fetched([Message(0, tp="t0"), Message(1, tp="t1"), Message(2, tp="t0")]))
    await reader._forget_revoked(None, {"t0"})
    assert reader.pending == [(Message(1, tp="t1"), 0)]


# --- the batch forms of Faust's Consumer.ack and Consumer.getmany -------------------------
# Faust's own methods run on a stand-in consumer (they read only these attributes), so
# each batch form is held to the original on the same inputs.


@dataclass(eq=False)  # hashable by identity, as Faust's messages are (a WeakSet holds them)
class FaustMessage:
    topic: str
    partition: int
    offset: int
    acked: bool = False
    generation_id: int = 1

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


class Topics:
    def __init__(self, without_acks: set[str]) -> None:
        self.without_acks = without_acks

    def acks_enabled_for(self, topic: str) -> bool:
        return topic not in self.without_acks


class Monitor:
    def __init__(self) -> None:
        self.tp_end_offsets: dict[Any, int] = {}

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        self.tp_end_offsets[tp] = offset


class RoundRobin:
    def iterate(self, records: dict[Any, list[Any]]) -> Iterable[tuple[Any, Any]]:
        its = {tp: iter(rs) for tp, rs in records.items()}
        while its:
            for tp in list(its):
                record = next(its[tp], None)
                if record is None:
                    del its[tp]
                else:
                    yield tp, record


class FaustConsumer:
    """The attributes Consumer.ack and Consumer.getmany read, and nothing else."""

    def __init__(self, committed: dict[Any, int | None], without_acks: set[str]) -> None:
        from collections import defaultdict
        from weakref import WeakSet

        self.app = SimpleNamespace(
            topics=Topics(without_acks), monitor=Monitor(), consumer_generation_id=3
        )
        self.app.client_only = False
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: None, committed)
        self._acked_index: dict[Any, set[int]] = defaultdict(set)
        self._acked: dict[Any, list[int]] = defaultdict(list)
        self._unacked_messages: WeakSet[FaustMessage] = WeakSet()
        self._n_acked = 0
        self._waiting_for_ack: asyncio.Future[None] | None = None
        self.should_stop = False
        self.flow_active = True
        self._buffered_partitions: set[Any] = set()
        self.scheduler = RoundRobin()
        self.fetched: tuple[dict[Any, list[Any]] | None, set[Any] | None] = ({}, set())
        self.seeks = 0
        self.log = SimpleNamespace(dev=lambda *args: None)

    async def _wait_next_records(self, wait_s: float) -> Any:
        return self.fetched

    async def perform_seek(self) -> None:
        self.seeks += 1

    def highwater(self, tp: Any) -> int:
        return 100 + tp[1]

    def _to_message(self, tp: Any, record: Any) -> FaustMessage:
        return FaustMessage(tp[0], tp[1], record, generation_id=self.app.consumer_generation_id)

    def bookkeeping(self) -> tuple[Any, ...]:
        return (
            dict(self._acked),
            {tp: sorted(i) for tp, i in self._acked_index.items()},
            self._n_acked,
            sorted((m.topic, m.partition, m.offset) for m in self._unacked_messages),
        )


def _messages(spec: list[tuple[int, int, int, bool]]) -> list[FaustMessage]:
    topics = ("in", "other")
    return [FaustMessage(topics[t], p, o, acked) for t, p, o, acked in spec]


@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, 12), st.booleans()),
        max_size=30,
    ),
    st.dictionaries(st.integers(0, 2), st.none() | st.integers(0, 8)),
    st.booleans(),
    st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_acknowledging_a_batch_does_what_faust_does_one_message_at_a_time(
    spec: list[tuple[int, int, int, bool]],
    committed_by_partition: dict[int, int | None],
    other_without_acks: bool,
    tracked: bool,
) -> None:
    from faust.transport.consumer import Consumer as FaustsConsumer

    from streams.kafka.batches import ack_all

    committed = {(t, p): c for p, c in committed_by_partition.items() for t in ("in", "other")}
    without = {"other"} if other_without_acks else set()
    ours, faust = FaustConsumer(committed, without), FaustConsumer(committed, without)
    mine, theirs = _messages(spec), _messages(spec)
    if tracked:  # messages a Faust stream took are in the consumer's unacked set
        ours._unacked_messages.update(mine[::2])
        faust._unacked_messages.update(theirs[::2])
    ack_all(ours, mine)
    for message in theirs:
        FaustsConsumer.ack(faust, message)  # type: ignore[arg-type]  # the stand-in
    assert ours.bookkeeping() == faust.bookkeeping()
    assert [m.acked for m in mine] == [m.acked for m in theirs]


async def test_acknowledging_a_batch_wakes_a_commit_waiting_for_acks() -> None:
    from streams.kafka.batches import ack_all

    consumer = FaustConsumer({}, set())
    consumer._waiting_for_ack = asyncio.get_running_loop().create_future()
    ack_all(consumer, _messages([(0, 0, 1, False), (0, 0, 2, False)]))
    assert consumer._waiting_for_ack.done()
    assert consumer._acked == {("in", 0): [1, 2]}


async def _faust_getmany(consumer: FaustConsumer) -> list[tuple[Any, Any]]:
    from faust.transport.consumer import Consumer as FaustsConsumer

    pairs = []
    async for tp, message in FaustsConsumer.getmany(consumer, timeout=1.0):  # type: ignore[arg-type]  # the stand-in
        pairs.append((tp, message))
    return pairs


def _fetched_form(pairs: list[tuple[Any, Any]]) -> list[tuple[Any, str, int, int, int]]:
    return [(tp, m.topic, m.partition, m.offset, m.generation_id) for tp, m in pairs]


@pytest.mark.parametrize(
    "active",
    [None, {("in", 0), ("in", 1), ("other", 0)}, {("in", 1)}, set()],
    ids=["client-only", "all-active", "one-active", "none-active"],
)
async def test_a_fetch_hands_over_what_faust_getmany_yields(active: set[Any] | None) -> None:
    from streams.kafka.batches import _fetch

    records = {("in", 0): [5, 6, 7], ("in", 1): [1], ("other", 0): [3, 4]}
    ours, faust = FaustConsumer({}, set()), FaustConsumer({}, set())
    for consumer in (ours, faust):
        consumer.fetched = (records, active)
        consumer._buffered_partitions = {("other", 0)}
    assert _fetched_form(await _fetch(ours, 1.0)) == _fetched_form(await _faust_getmany(faust))
    assert ours.app.monitor.tp_end_offsets == faust.app.monitor.tp_end_offsets
    assert ours.app.monitor.tp_end_offsets  # something was fetched and noted


async def test_a_fetch_while_the_flow_is_stopped_seeks_back_and_hands_over_nothing() -> None:
    from streams.kafka.batches import _fetch

    ours, faust = FaustConsumer({}, set()), FaustConsumer({}, set())
    for consumer in (ours, faust):
        consumer.fetched = ({("in", 0): [1, 2]}, None)
        consumer.flow_active = False
    assert await _fetch(ours, 1.0) == await _faust_getmany(faust) == []
    assert ours.seeks == faust.seeks == 1


async def test_nothing_fetched_or_stopping_hands_over_nothing() -> None:
    from streams.kafka.batches import _fetch

    stopping = FaustConsumer({}, set())
    stopping.fetched = ({("in", 0): [1]}, None)
    stopping.should_stop = True
    empty = FaustConsumer({}, set())
    empty.fetched = (None, None)
    assert await _fetch(stopping, 1.0) == await _fetch(empty, 1.0) == []
