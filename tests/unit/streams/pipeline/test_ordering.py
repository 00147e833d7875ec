"""The event-time reorder buffer, on its own: pure bookkeeping, no broker needed."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.events import ClickstreamEvent
from streams.pipeline.intake import Record
from streams.pipeline.ordering import EventTimeBuffer, Scorable

TOPICS = ("clicks", "buys")


def item(topic: str, offset: int, t: float, seq: int) -> Scorable:
    event = ClickstreamEvent(
        event_id=f"{topic}{offset}", customer_id="c", type="x",
        occurred_at=datetime.fromtimestamp(t, tz=UTC),
    )  # fmt: skip
    return Scorable(Record(topic, 0, offset, None, b"", {}), event, 0, t, seq)


def buffer(ends: dict[str, int | None]) -> EventTimeBuffer:
    b = EventTimeBuffer(lambda shard: [(t, shard) for t in TOPICS], max_held=100)
    b.highwater = lambda topic, partition: ends[topic]
    return b


def add(b: EventTimeBuffer, *items: Scorable) -> None:
    for i in items:
        b.note_read(i.record)
        b.add(i)


def released(b: EventTimeBuffer) -> list[tuple[str, int]]:
    return [(i.record.topic, i.record.offset) for i in b.release().get(0, [])]


def test_a_fast_partition_waits_for_a_slow_one() -> None:
    b = buffer({"clicks": 10, "buys": 10})  # both have records left to read
    add(b, item("clicks", 0, 100, 1), item("clicks", 1, 300, 2), item("buys", 0, 200, 3))
    # clicks read to t=300, buys to t=200: only events up to 200 are certain to be in order
    assert released(b) == [("clicks", 0), ("buys", 0)]
    assert b.held == 1
    add(b, item("buys", 1, 400, 4))
    assert released(b) == [("clicks", 1)]


def test_everything_is_released_in_time_order_once_all_partitions_are_read() -> None:
    b = buffer({"clicks": 2, "buys": 1})
    add(b, item("clicks", 0, 100, 1), item("clicks", 1, 300, 2), item("buys", 0, 200, 3))
    assert released(b) == [("clicks", 0), ("buys", 0), ("clicks", 1)]
    assert b.held == 0


def test_an_unread_partition_of_unknown_time_holds_everything() -> None:
    b = buffer({"clicks": 5, "buys": 5})
    add(b, item("clicks", 0, 100, 1))
    assert released(b) == []
    assert b.clock(0) is None


def test_a_partition_releases_in_offset_order_even_when_times_go_back() -> None:
    b = buffer({"clicks": 10, "buys": 10})
    add(b, item("clicks", 0, 300, 1), item("clicks", 1, 100, 2), item("buys", 0, 200, 3))
    # clicks' late record (t=100) may not overtake its earlier offset (t=300)
    assert released(b) == [("buys", 0)]


def test_the_sweeper_clock_never_passes_a_waiting_event() -> None:
    b = buffer({"clicks": 10, "buys": 10})
    add(b, item("clicks", 0, 300, 1), item("clicks", 1, 100, 2), item("buys", 0, 200, 3))
    b.release()
    assert b.clock(0) == 100


def test_memory_is_bounded_by_releasing_the_oldest() -> None:
    b = EventTimeBuffer(lambda shard: [(t, shard) for t in TOPICS], max_held=2)
    b.highwater = lambda topic, partition: 10**6
    add(b, *(item("clicks", n, 100 + n, n) for n in range(5)))  # buys never read: unknown
    assert len(released(b)) == 3 and b.held == 2


def test_forgetting_revoked_partitions_drops_what_waits() -> None:
    b = buffer({"clicks": 10, "buys": 10})
    add(b, item("clicks", 0, 100, 1))
    b.forget([("clicks", 0)])
    assert b.held == 0 and b.release() == {}
