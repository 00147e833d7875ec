"""The Redis state layer against a real Redis: key layout, the epoch guard, watermarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from scoring.state import CustomerState
from streams.dev.services import Endpoints
from streams.state.store import (
    ShardKeys,
    ShardWrite,
    StateStore,
    mark_field,
    offset_field,
    parse_field,
)

T0 = 1_709_251_200.0  # 2024-03-01T00:00:00Z


@pytest.fixture
async def client(endpoints: Endpoints) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(endpoints.redis_url)
    yield client
    await client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def snapshot(client: aioredis.Redis, namespace: str) -> dict[bytes, Any]:
    """Every key of the namespace with its full content (the meta hash's epoch included)."""
    out: dict[bytes, Any] = {}
    async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        kind = _text(await client.type(key))
        if kind == "string":
            out[key] = await client.get(key)
        elif kind == "hash":
            out[key] = await client.hgetall(key)
        elif kind == "zset":
            out[key] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = await client.xrange(key)
        else:
            raise AssertionError(f"unexpected {kind} key {key!r}")
    return out


def state(customer_id: str, next_check_at: float | None = T0 + 3600.0) -> CustomerState:
    return replace(
        CustomerState.new(customer_id, T0),
        counts={"events": 1},
        next_check_at=next_check_at,
    )


def test_shard_keys_layout() -> None:
    keys = ShardKeys("t0abc", 3)
    assert keys.prefix == "t0abc:{s3}"
    assert keys.meta == "t0abc:{s3}:meta"
    assert keys.due == "t0abc:{s3}:due"
    assert keys.outbox == "t0abc:{s3}:outbox"
    assert keys.customer("c:1{x}") == "t0abc:{s3}:c:c:1{x}"
    assert offset_field("a:b.clicks", 7) == "o:a:b.clicks:7"
    assert mark_field("a:b.clicks", 7) == "w:a:b.clicks:7"
    assert parse_field(offset_field("a:b.clicks", 7)) == ("a:b.clicks", 7)
    assert parse_field(mark_field("x", 12)) == ("x", 12)


# How the store talks to Redis: one script call per batch for reads and one for commits
# (standalone), or calls touching one shard each (a cluster, or a proxy routing by key).
CALLS = pytest.mark.parametrize("per_shard_calls", [False, True], ids=["batch", "per_shard"])


@CALLS
async def test_commit_writes_exactly_the_shard_keys(
    client: aioredis.Redis, namespace: str, per_shard_calls: bool
) -> None:
    store = StateStore(client, namespace, per_shard_calls=per_shard_calls)
    ids = ["plain", "with:colons", "{braced}", "}odd{"]
    write = ShardWrite(shard=2, expected_epoch="0")
    write.states = {c: state(c) for c in ids}
    write.offsets = {offset_field("clicks", 2): 41}
    write.marks = {mark_field("clicks", 2): T0 + 10.0}
    write.outbox = [("alerts", b"plain", b'{"alert_id":"a1"}')]
    committed = await store.commit([write])
    outbox_ids = committed[2]
    assert outbox_ids is not None and len(outbox_ids) == 1

    keys = store.keys(2)
    snap = await snapshot(client, namespace)
    expected = {keys.meta, keys.due, keys.outbox, *(keys.customer(c) for c in ids)}
    assert set(snap) == {k.encode() for k in expected}
    assert snap[keys.meta.encode()] == {
        b"epoch": b"1",
        b"o:clicks:2": b"41",
        b"w:clicks:2": repr(T0 + 10.0).encode(),
    }
    assert sorted(snap[keys.due.encode()]) == sorted((c.encode(), T0 + 3600.0) for c in ids)

    view = (await store.read({2: [*ids, "absent"]}))[2]
    assert view.epoch == "1"
    assert view.applied_offset("clicks", 2) == 41
    assert view.applied_offset("clicks", 3) == -1
    assert view.marks == {"w:clicks:2": T0 + 10.0}
    assert view.customers == {c: state(c) for c in ids}

    pending = await store.pending_outbox([2], 10)
    assert [(e.shard, e.entry_id, e.topic, e.key, e.value) for e in pending] == [
        (2, outbox_ids[0], "alerts", b"plain", b'{"alert_id":"a1"}')
    ]

    # A customer without a next check leaves the due set; acked outbox entries go.
    again = ShardWrite(shard=2, expected_epoch="1")
    again.states = {"plain": state("plain", next_check_at=None)}
    again.acked_outbox_ids = list(outbox_ids)
    assert (await store.commit([again]))[2] == []
    assert await store.pending_outbox([2], 10) == []
    due = await store.due_customers([2], {2: T0 + 7200.0}, 100)
    assert sorted(due[2]) == sorted(ids[1:])
    assert (await store.metas([2]))[2].epoch == "2"


async def test_a_commit_larger_than_one_chunk_writes_every_customer(
    client: aioredis.Redis, namespace: str
) -> None:
    """The script writes blobs (MSET) and check times (ZADD, ZREM) in chunks of 2,000
    arguments: 2,500 customers take two chunks of check times and three of blobs."""
    store = StateStore(client, namespace)
    ids = [f"c{n:05d}" for n in range(2_500)]
    write = ShardWrite(shard=1, expected_epoch="0")
    write.states = {c: state(c, T0 + n) for n, c in enumerate(ids)}
    assert (await store.commit([write]))[1] == []
    keys = store.keys(1)
    assert await client.zcard(keys.due) == len(ids)
    assert await client.zscore(keys.due, ids[-1]) == T0 + len(ids) - 1
    view = (await store.read({1: ids}))[1]
    assert view.customers == write.states
    # The sweep's read (HGETALL and MGET, not the read script) gives the same.
    wanted = {1: [*ids, "absent"], 2: ["absent"]}
    by_script = await store.read_stored(wanted)
    assert len(by_script[1][1]) == len(ids)
    assert await store.read_stored(wanted, pipelined=True) == by_script

    # Every other customer without a next check: 1,250 removals, 1,250 updates.
    again = ShardWrite(shard=1, expected_epoch="1")
    again.states = {c: state(c, None if n % 2 else T0 - n) for n, c in enumerate(ids)}
    assert (await store.commit([again]))[1] == []
    due = await client.zrange(keys.due, 0, -1, withscores=True)
    assert due == [(c.encode(), T0 - n) for n, c in reversed(list(enumerate(ids))) if n % 2 == 0]


@CALLS
async def test_stale_epoch_is_refused_and_changes_nothing(
    client: aioredis.Redis, namespace: str, per_shard_calls: bool
) -> None:
    store = StateStore(client, namespace, per_shard_calls=per_shard_calls)
    first = ShardWrite(shard=0, expected_epoch="0")
    first.states = {"c1": state("c1")}
    first.offsets = {offset_field("clicks", 0): 5}
    first.marks = {mark_field("clicks", 0): T0}
    assert (await store.commit([first]))[0] == []
    before = await snapshot(client, namespace)

    stale = ShardWrite(shard=0, expected_epoch="0")  # read before `first` committed
    stale.states = {"c1": state("c1", next_check_at=None), "c2": state("c2")}
    stale.offsets = {offset_field("clicks", 0): 9, offset_field("purchases", 0): 3}
    stale.marks = {mark_field("clicks", 0): T0 + 99.0}
    stale.outbox = [("alerts", b"c1", b"{}")]
    stale.acked_outbox_ids = ["0-1"]
    fresh = ShardWrite(shard=1, expected_epoch="0")
    fresh.states = {"c9": state("c9")}

    result = await store.commit([stale, fresh])
    assert result[0] is None
    assert result[1] == []  # the other shard of the same call (or pipeline) is applied
    after = await snapshot(client, namespace)
    assert {k: v for k, v in after.items() if b"{s0}" in k} == before
    assert (await store.customer(1, "c9")) == state("c9")

    # With the current epoch the same write goes through.
    stale.expected_epoch = (await store.metas([0]))[0].epoch
    assert (await store.commit([stale]))[0] is not None
    assert (await store.customer(0, "c2")) == state("c2")


async def test_watermarks_only_move_forward(client: aioredis.Redis, namespace: str) -> None:
    store = StateStore(client, namespace)
    clicks, purchases = mark_field("ns:clicks", 1), mark_field("purchases", 1)

    async def commit_marks(marks: dict[str, float]) -> None:
        view = (await store.metas([1]))[1]
        write = ShardWrite(shard=1, expected_epoch=view.epoch, marks=marks)
        assert (await store.commit([write]))[1] is not None

    async def marks() -> dict[str, float]:
        return dict((await store.metas([1]))[1].marks)

    await commit_marks({clicks: T0 + 200.0})
    await commit_marks({clicks: T0 + 100.0, purchases: T0 + 50.0})
    assert await marks() == {clicks: T0 + 200.0, purchases: T0 + 50.0}
    await commit_marks({clicks: T0 + 199.999, purchases: T0 + 50.5})
    assert await marks() == {clicks: T0 + 200.0, purchases: T0 + 50.5}
    await commit_marks({clicks: T0 + 300.0})
    assert await marks() == {clicks: T0 + 300.0, purchases: T0 + 50.5}
    # Far apart magnitudes compare as numbers, not as strings.
    await commit_marks({purchases: 9.5})
    await commit_marks({purchases: 1e12})
    assert (await marks())[purchases] == 1e12
    assert [parse_field(name) for name in sorted(await marks())] == [
        ("ns:clicks", 1),
        ("purchases", 1),
    ]


@CALLS
async def test_a_redis_without_the_scripts_gets_them_loaded(
    client: aioredis.Redis, namespace: str, per_shard_calls: bool
) -> None:
    """A restarted Redis has no scripts: reads and commits load them and go through, each
    part applied once."""
    store = StateStore(client, namespace, per_shard_calls=per_shard_calls)
    writes = []
    for shard in (0, 3, 5):
        write = ShardWrite(shard=shard, expected_epoch="0")
        write.states = {f"c{shard}": state(f"c{shard}")}
        write.outbox = [("alerts", f"c{shard}".encode(), b"{}")]
        writes.append(write)
    await client.script_flush()
    committed = await store.commit(writes)
    assert sorted(committed) == [0, 3, 5]
    assert all(ids is not None and len(ids) == 1 for ids in committed.values()), committed
    await client.script_flush()
    views = await store.read({0: ["c0"], 3: ["c3", "absent"], 5: []})
    assert {s: v.epoch for s, v in views.items()} == {0: "1", 3: "1", 5: "1"}
    assert views[3].customers == {"c3": state("c3")}
    assert views[5].customers == {}
    assert len(await store.pending_outbox([0, 3, 5], 10)) == 3
