"""Where a partition resumes, and when Redis is judged to have lost writes: pure rules."""

from __future__ import annotations

import pytest

from streams.state.positions import GuardedStore, StateLost, done_frontier, meta_shard, start_offset
from streams.state.store import ShardView, StateStore


@pytest.mark.parametrize(
    ("committed", "applied", "done", "expected"),
    [
        # Redis lost the tail Kafka committed: read it again.
        (100, 59, None, 60),
        # Redis ahead of Kafka (the commit lags): Kafka's offset, as dead letters below the
        # last scored record may not have been delivered.
        (100, 149, None, 100),
        # No applied offset in Redis: Kafka's committed offset.
        (100, None, None, 100),
        # A tail of dead letters delivered after the last scored record: not read again.
        (100, 59, 99, 100),
        # Everything up to ``done`` is finished, even past what Kafka committed.
        (100, 140, 120, 121),
        # Nothing known: Kafka decides (the earliest record).
        (None, None, None, None),
        (None, 10, None, None),
        (None, None, 7, 8),
    ],
)
def test_start_offset(
    committed: int | None, applied: int | None, done: int | None, expected: int | None
) -> None:
    assert start_offset(committed, applied, done) == expected


def test_done_frontier_stops_below_the_first_record_still_in_flight() -> None:
    delivered = {("clicks", 0): 9, ("buys", 1): 3, ("buys", 2): 4}
    # the first records still in flight: clicks 0 at 7 (and 8), clicks 2 at 1, buys 2 at 6
    first_pending = {("clicks", 0): 7, ("clicks", 2): 1, ("buys", 2): 6}
    assert done_frontier(delivered, first_pending) == {
        ("clicks", 0): 6,
        ("buys", 1): 3,
        ("buys", 2): 4,
    }


def test_a_partition_of_a_wider_topic_keeps_its_offsets_in_a_shard_it_folds_to() -> None:
    assert [meta_shard(p, 4) for p in (0, 3, 4, 9)] == [0, 3, 0, 1]


def _view(shard: int, offsets: dict[str, int]) -> ShardView:
    return ShardView(shard=shard, epoch="7", offsets=offsets, marks={}, customers={})


def test_redis_holding_less_than_this_worker_committed_is_a_loss() -> None:
    store = GuardedStore(client=None, namespace="ns")
    committed = {"o:clicks:2": 40, "o:buys:2": 3}
    store.check(_view(2, {"o:clicks:2": 41, "o:buys:2": 3}), committed)  # moved on: fine
    store.check(_view(1, {}), {})  # a shard this worker never wrote
    with pytest.raises(StateLost, match=r"o:clicks:2 = 39.*committed 40"):
        store.check(_view(2, {"o:clicks:2": 39, "o:buys:2": 3}), committed)
    with pytest.raises(StateLost, match=r"o:buys:2 = -1"):
        store.check(_view(2, {"o:clicks:2": 41}), committed)


async def test_a_commit_finishing_while_a_read_is_in_flight_is_no_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = GuardedStore(client=None, namespace="ns")
    store.committed_here = {2: {"o:clicks:2": 40}}

    async def read_sent_before_a_commit(
        self: object, wanted: object, *, pipelined: bool = False
    ) -> dict[int, tuple[ShardView, dict[str, bytes]]]:
        store.committed_here[2]["o:clicks:2"] = 55  # the commit completes meanwhile
        return {2: (_view(2, {"o:clicks:2": 41}), {})}  # the read saw the state before it

    monkeypatch.setattr(StateStore, "read_stored", read_sent_before_a_commit)
    views = await store.read({2: []})
    assert views[2].applied_offset("clicks", 2) == 41
    store.committed_here[2]["o:clicks:2"] = 55
    with pytest.raises(StateLost):
        await store.read({2: []})  # now the read comes after the commit: a loss
