"""A worker resumes each partition at what Redis has applied, not at Kafka's committed offset."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.types import TP
from worker_harness import (
    consume_until,
    event,
    poll,
    produce,
    running_workers,
    settings_of,
    wait_for,
    worker_env,
)

from streams.dev.services import Endpoints, free_port
from streams.kafka.repositioning import Repositioning
from streams.pipeline.intake import shard_of
from streams.settings import Settings
from streams.state.positions import (
    EXIT_STATE_LOST,
    GuardedStore,
    Positions,
    StateLost,
)
from streams.state.store import ShardKeys, StateStore, offset_field

PARTITIONS = 4
Outgoing = tuple[str, str | bytes | None, bytes, int | None]


async def _committed(s: Settings, tp: TopicPartition) -> int | None:
    """The group's committed offset, read without joining the group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap, group_id=s.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        offset = await consumer.committed(tp)
    finally:
        await consumer.stop()
    return None if offset is None or offset < 0 else int(offset)


async def _snapshot(client: aioredis.Redis, namespace: str) -> dict[bytes, bytes]:
    return {
        key: await client.dump(key)
        async for key in client.scan_iter(match=f"{namespace}:*", count=1000)
    }


async def _restore(client: aioredis.Redis, namespace: str, snapshot: dict[bytes, bytes]) -> None:
    """Put Redis back as it was at the snapshot, as a restart that lost writes does."""
    async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        await client.delete(key)
    for key, dumped in snapshot.items():
        await client.restore(key, 0, dumped)


def _page_views(s: Settings, customer: str, shard: int, first: int, count: int) -> list[Outgoing]:
    return [
        (s.topic_clickstream, customer, event(f"v{i}", customer, i / 24, "page_view"), shard)
        for i in range(first, first + count)
    ]


def _has_events(
    store: StateStore, shard: int, customer: str, n: int
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        state = await store.customer(shard, customer)
        return state is not None and state.count("events") == n

    return check


async def test_events_lost_by_redis_are_read_again_though_kafka_committed_past_them(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    env = worker_env(endpoints, test_token, tmp_path, ENGAGEMENT_CLOCK="wall")
    s = settings_of(env)
    grace = "grace"
    shard = shard_of(grace, PARTITIONS)
    tp = TopicPartition(s.topic_clickstream, shard)

    def views(first: int, count: int) -> list[Outgoing]:
        return _page_views(s, grace, shard, first, count)

    client = aioredis.from_url(endpoints.redis_url)
    store = StateStore(client, s.namespace)

    def has_events(n: int) -> Callable[[], Awaitable[bool]]:
        return _has_events(store, shard, grace, n)

    async def committed_to(offset: int) -> None:
        async def done() -> bool:
            return await _committed(s, tp) == offset

        await poll(done, 30, f"the group committing offset {offset}")

    try:
        with running_workers(env, 1, tmp_path):
            await produce(s.kafka_bootstrap, views(0, 10))
            await poll(has_events(10), 30, "the first 10 events applied")
            older = await _snapshot(client, s.namespace)
            await produce(s.kafka_bootstrap, views(10, 15))
            await poll(has_events(25), 30, "all 25 events applied")
            await committed_to(25)

        # Redis comes back without the last 15 events; Kafka's group still says 25.
        await _restore(client, s.namespace, older)
        assert (await store.metas([shard]))[shard].applied_offset(tp.topic, shard) == 9
        assert await _committed(s, tp) == 25

        with running_workers(env, 1, tmp_path):
            await poll(has_events(25), 60, "the 15 events lost by Redis applied again")
            await committed_to(25)
        state = await store.customer(shard, grace)
        assert state is not None and state.count("events") == 25  # each once
    finally:
        await client.aclose()


async def test_a_partition_ending_in_dead_letters_is_not_read_again_after_a_restart(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    env = worker_env(endpoints, test_token, tmp_path, ENGAGEMENT_CLOCK="wall")
    s = settings_of(env)
    henry = "henry"
    shard = shard_of(henry, PARTITIONS)
    tp = TopicPartition(s.topic_clickstream, shard)
    valid: list[Outgoing] = [
        (s.topic_clickstream, henry, event("h0", henry, 0.0, "page_view"), shard)
    ]
    malformed: list[Outgoing] = [
        (s.topic_clickstream, henry, b'{"not": "an event", "n": %d}' % i, shard) for i in range(30)
    ]
    client = aioredis.from_url(endpoints.redis_url)
    store = StateStore(client, s.namespace)

    def has_events(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            state = await store.customer(shard, henry)
            return state is not None and state.count("events") == n

        return check

    def dead_letters(n: int) -> Callable[[list[object]], bool]:
        return lambda seen: len(seen) >= n

    try:
        with running_workers(env, 1, tmp_path):
            await produce(s.kafka_bootstrap, valid + malformed)
            await consume_until(s.kafka_bootstrap, [s.topic_deadletter], dead_letters(30), 30)

            async def all_committed() -> bool:
                return await _committed(s, tp) == 31

            await poll(all_committed, 30, "the group committing past the dead letters")

        # Redis applied only offset 0: without its record of the dead letters delivered, the
        # restart would resume at min(committed, applied + 1) = 1 and send them all again.
        meta = await client.hgetall(store.keys(shard).meta)
        assert int(meta[f"o:{tp.topic}:{shard}".encode()]) == 0
        assert int(meta[f"d:{tp.topic}:{shard}".encode()]) == 30

        later: list[Outgoing] = [
            (s.topic_clickstream, henry, event("h1", henry, 1.0, "page_view"), shard)
        ]
        with running_workers(env, 1, tmp_path) as (worker,):
            await produce(s.kafka_bootstrap, later)
            await poll(has_events(2), 60, "the event after the dead letters applied")
            assert worker.metric("engagement_deadletter_total") == 0  # none read again
        seen = await consume_until(s.kafka_bootstrap, [s.topic_deadletter], dead_letters(30), 30)
        assert len(seen) == 30
    finally:
        await client.aclose()


async def test_redis_losing_writes_a_worker_resumed_after_makes_it_stop_and_resume_again(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    """The worker did not apply the lost records itself (a previous owner did, before it
    was assigned the partition): it still relied on them to resume past them, so it must
    stop rather than read on and never see them again."""
    env = worker_env(endpoints, test_token, tmp_path, ENGAGEMENT_CLOCK="wall")
    s = settings_of(env)
    grace = "grace"
    shard = shard_of(grace, PARTITIONS)

    def views(first: int, count: int) -> list[Outgoing]:
        return _page_views(s, grace, shard, first, count)

    client = aioredis.from_url(endpoints.redis_url)
    store = StateStore(client, s.namespace)

    def has_events(n: int) -> Callable[[], Awaitable[bool]]:
        return _has_events(store, shard, grace, n)

    try:
        with running_workers(env, 1, tmp_path):
            await produce(s.kafka_bootstrap, views(0, 10))
            await poll(has_events(10), 30, "the first 10 events applied")
            older = await _snapshot(client, s.namespace)
            await produce(s.kafka_bootstrap, views(10, 15))
            await poll(has_events(25), 30, "all 25 events applied")

        with running_workers(env, 1, tmp_path) as (resumed,):
            # Faust says Ready once its first seeks (here: to offset 25) are done.
            ready = "[^Worker]: Ready"
            wait_for(lambda: ready in resumed.log.read_text(errors="replace"), 60, ready, resumed)
            # It resumed at offset 25 and applies nothing; now Redis loses 15 records.
            await _restore(client, s.namespace, older)

            async def stopped() -> bool:
                return resumed.process.poll() is not None

            await poll(stopped, 30, "the resumed worker stopping")
            assert resumed.process.returncode == EXIT_STATE_LOST, resumed.log_tail()

        with running_workers(env, 1, tmp_path):
            await produce(s.kafka_bootstrap, views(25, 1))
            await poll(has_events(26), 60, "the 15 lost events read again, and a new one")
    finally:
        await client.aclose()


class _Consumer:
    """The worker's consumer (streams/kafka/transport.py), as far as its commit guard
    goes: the commit the check guards is what these tests watch (the worker tests above
    run the real one)."""

    def __init__(self) -> None:
        self.committed: list[list[TP]] = []
        self.repositioning: Repositioning | None = None

    async def _commit_tps(self, tps: list[TP], start_new_transaction: bool) -> bool:
        assert self.repositioning is not None
        if not await self.repositioning.may_commit(tps):
            return False
        self.committed.append(list(tps))
        return True


async def test_kafka_offsets_are_committed_only_while_redis_holds_what_the_worker_wrote(
    endpoints: Endpoints, namespace: str
) -> None:
    """Faust commits on a timer of its own; after Redis lost writes it must not commit the
    records whose writes were lost (the worker stops instead), and with Redis unreachable
    it commits nothing."""
    client = aioredis.from_url(endpoints.redis_url)
    store = GuardedStore(client, namespace)
    positions = Positions(store, PARTITIONS)
    consumer, lost = _Consumer(), []

    async def stop_if_lost(work: Awaitable[None]) -> None:
        try:
            await work
        except StateLost as exc:
            lost.append(str(exc))
            raise

    async def retrying(call: Callable[[], Any]) -> Any:
        return await call()

    consumer.repositioning = Repositioning(positions, {"clicks"}, retrying, stop_if_lost)
    tp, meta = TP("clicks", 1), ShardKeys(namespace, 1).meta
    field = offset_field("clicks", 1)
    try:
        await client.hset(meta, field, "41")
        store.expect(1, field, 41)  # the worker applied up to 41
        assert await consumer._commit_tps([tp], True)
        await client.hset(meta, field, "30")  # Redis restarted without its last writes
        with pytest.raises(StateLost):
            await consumer._commit_tps([tp], True)
        assert consumer.committed == [[tp]] and "Redis lost writes" in lost[0]
    finally:
        await client.aclose()

    unreachable = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    positions.store = GuardedStore(unreachable, namespace)
    positions.store.expect(1, field, 41)
    try:
        assert not await consumer._commit_tps([tp], True)
        assert consumer.committed == [[tp]]
    finally:
        await unreachable.aclose()
