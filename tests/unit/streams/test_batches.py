"""The batch reader's hand-over rules, with stand-ins for the Faust app (pure logic: which
messages reach the scorer, in what lists, and when the fetch loop must wait). The path
through a real consumer is covered by every worker test in tests/integration."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.batches import BatchReader, drain_is_known

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


def test_the_replaced_fetch_loop_is_the_installed_one() -> None:
    # Fails when faust-streaming changes Consumer._drain_messages: re-read the new source,
    # port streams/batches.py's copy and update its digest (the worker falls back to the
    # agent meanwhile).
    assert drain_is_known()


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
