"""Scorer.sweep writes what the plain sweep writes, byte for byte.

The sweeper patches the stored blob of a customer whose check time alone moved and leaves
such customers out of the KPI deltas (streams/sweeper.py ``sweep_shard``). Compared
here with the straightforward sweep -- decode every state, ``evaluate_due``, count every
customer with ``KpiDelta.add_evaluation``, encode every state -- run on a copy of the same
Redis data in another namespace: states, due schedule, KPI hash and outbox must be equal.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.config import load_config
from scoring.engine import apply_event, evaluate_due
from scoring.state import CustomerState
from streams.intake import Decoder, shard_of
from streams.kpis import KpiDelta
from streams.processor import AlertTopics, Scorer
from streams.services import Endpoints
from streams.simulator import generate
from streams.store import ShardWrite, StateStore
from streams.sweeper import COMMIT_CUSTOMERS

CONFIG = load_config(None)
SHARDS = 4
START = datetime(2026, 1, 5, tzinfo=UTC)
MODELS: dict[str, type[InputEvent]] = {
    "clickstream": ClickstreamEvent,
    "purchases": PurchaseEvent,
    "feedback": FeedbackEvent,
}


@pytest.fixture
async def client(endpoints: Endpoints) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(endpoints.redis_url)
    yield client
    await client.aclose()


def simulated_states(customers: int, days: float) -> list[CustomerState]:
    """Customers' states after ``days`` of simulated history, scored event by event."""
    states: dict[str, CustomerState] = {}
    events: dict[str, list[InputEvent]] = defaultdict(list)
    for e in generate(customers, days, 3, START):
        events[e.customer_id].append(MODELS[e.source].model_validate(e.payload))
    for customer_id, history in events.items():
        for event in sorted(history, key=lambda e: e.occurred_at):
            t = event.occurred_at.timestamp()
            states[customer_id] = apply_event(states.get(customer_id), event, t, t, CONFIG).state
    return list(states.values())


async def write_copy(
    client: aioredis.Redis,
    store: StateStore,
    states: list[CustomerState],
    legacy: list[str],
    not_due: list[str],
    legacy_json: Callable[[CustomerState], bytes],
) -> None:
    """The states through the commit script; some of them (``legacy``) stored in the JSON
    form, and some (``not_due``) listed as due although their state says otherwise."""
    by_shard: dict[int, dict[str, CustomerState]] = defaultdict(dict)
    for s in states:
        by_shard[shard_of(s.customer_id, SHARDS)][s.customer_id] = s
    writes = [ShardWrite(shard=s, expected_epoch="0", states=c) for s, c in by_shard.items()]
    assert all(ids is not None for ids in (await store.commit(writes)).values())
    for customer_id in legacy:
        old = next(s for s in states if s.customer_id == customer_id)
        key = store.keys(shard_of(customer_id, SHARDS)).customer(customer_id)
        await client.set(key, legacy_json(old))
    for customer_id in not_due:
        await client.zadd(store.keys(shard_of(customer_id, SHARDS)).due, {customer_id: 0.0})


async def plain_sweep(store: StateStore, now: float) -> None:
    """The reference: every due customer decoded, evaluated, counted and encoded."""
    shards = list(range(SHARDS))
    due = await store.due_customers(shards, dict.fromkeys(shards, now), 100_000)
    writes = []
    for shard, view in (await store.read(due)).items():
        write = ShardWrite(shard=shard, expected_epoch=view.epoch)
        kpi = KpiDelta()
        for customer_id, state in view.customers.items():
            result = evaluate_due(state, now, now, CONFIG)
            write.states[customer_id] = result.state
            kpi.add_evaluation(state, result.state, now)
            write.outbox.extend(
                ("churn", a.customer_id.encode(), a.model_dump_json().encode())
                for a in result.alerts
            )
        kpi.apply_to(write)
        writes.append(write)
    assert all(ids is not None for ids in (await store.commit(writes)).values())


def sweeping(
    store: StateStore, now: float, commit_customers: int, kind: type[Scorer] = Scorer
) -> Scorer:
    """A scorer on the wall clock stopped at ``now``, committing a shard's page in parts of
    ``commit_customers``."""
    scorer = kind(
        store,
        Decoder("clicks", "purchases", "feedback"),
        {"clicks", "purchases", "feedback"},
        CONFIG,
        AlertTopics("churn", "churn"),
        shards=SHARDS,
        clock="wall",
        wall=lambda: now,
    )
    scorer.sweep_commit_customers = commit_customers
    return scorer


async def due_counts(client: aioredis.Redis, store: StateStore, now: float) -> list[int]:
    """Per shard, how many customers' checks are due at ``now``."""
    return [int(await client.zcount(store.keys(s).due, "-inf", now)) for s in range(SHARDS)]


def conflicts_so_far() -> float:
    return REGISTRY.get_sample_value("engagement_commit_conflicts_total") or 0.0


async def contents(client: Any, store: StateStore) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for shard in range(SHARDS):
        keys = store.keys(shard)
        for key in await client.keys(f"{keys.prefix}:c:*"):
            out[key.decode().split(":c:", 1)[1]] = await client.get(key)
        out[f"due {shard}"] = await client.zrange(keys.due, 0, -1, withscores=True)
        out[f"kpi {shard}"] = await client.hgetall(keys.kpi)
        stream: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(keys.outbox)
        out[f"outbox {shard}"] = [f[b"v"] for _, f in stream]
    return out


@pytest.mark.parametrize("commit_customers", [COMMIT_CUSTOMERS, 4], ids=["one part", "parts"])
async def test_the_sweep_writes_what_the_plain_sweep_writes(
    client: aioredis.Redis,
    namespace: str,
    legacy_json: Callable[[CustomerState], bytes],
    commit_customers: int,
) -> None:
    states = simulated_states(60, 45.0)
    end = (START + timedelta(days=45)).timestamp()
    silent = [evaluate_due(s, end, end, CONFIG).state for s in states]
    # Far enough on that most cheap bounds are reached: some customers only move their
    # check time (settled), some are evaluated and some of those alert.
    now = end + 9 * 86_400.0
    later = [s.customer_id for s in silent if s.next_check_at and s.next_check_at > now]
    settling = [
        s.customer_id
        for s in silent
        if not s.check_exact and s.next_check_at and s.next_check_at <= now and not s.spend
    ]
    # due and settled, or not due, each in the compact and in the old JSON form
    legacy, not_due = [settling[0], later[0]], later[:2]
    swept, plain = StateStore(client, f"{namespace}a"), StateStore(client, f"{namespace}b")
    for store in (swept, plain):
        await write_copy(client, store, silent, legacy, not_due, legacy_json)

    # In parts, each shard's page is committed a few customers at a time, each part on
    # the epoch the one before it left: every part applies.
    scorer = sweeping(swept, now, commit_customers)
    conflicts = conflicts_so_far()
    epochs = [int(await client.hget(swept.keys(s).meta, "epoch") or 0) for s in range(SHARDS)]
    due = await due_counts(client, swept, now)
    entries, most_per_shard = await scorer.sweep(list(range(SHARDS)), 100_000)
    await plain_sweep(plain, now)
    assert conflicts_so_far() == conflicts
    moved = [
        int(await client.hget(swept.keys(s).meta, "epoch") or 0) - e for s, e in enumerate(epochs)
    ]
    assert moved == [math.ceil(n / commit_customers) for n in due], (moved, due)
    assert max(moved) > (1 if commit_customers < COMMIT_CUSTOMERS else 0)

    before = {s.customer_id: s for s in silent}
    after = {
        c: CustomerState.from_bytes(b)
        for c, b in (await contents(client, swept)).items()
        if not c.startswith(("due", "kpi", "outbox"))
    }
    settled = [
        c
        for c, s in after.items()
        if s.evaluated_at == before[c].evaluated_at and s.next_check_at != before[c].next_check_at
    ]
    evaluated = [c for c, s in after.items() if s.evaluated_at != before[c].evaluated_at]
    assert settled and evaluated and entries  # the cases this compares all happened
    assert most_per_shard > 0
    assert await contents(client, swept) == await contents(client, plain)


async def test_a_part_after_one_that_did_not_apply_is_not_committed(
    client: aioredis.Redis, namespace: str
) -> None:
    """Another writer commits to a shard between two parts of its sweep: the later parts
    are refused or not sent (their customers were read before that commit), stay due, and
    the next sweep applies them."""
    states = simulated_states(60, 45.0)
    end = (START + timedelta(days=45)).timestamp()
    silent = [evaluate_due(s, end, end, CONFIG).state for s in states]
    now = end + 9 * 86_400.0
    store = StateStore(client, namespace)
    by_shard: dict[int, dict[str, CustomerState]] = defaultdict(dict)
    for s in silent:
        by_shard[shard_of(s.customer_id, SHARDS)][s.customer_id] = s
    writes = [ShardWrite(shard=s, expected_epoch="0", states=c) for s, c in by_shard.items()]
    assert all(ids is not None for ids in (await store.commit(writes)).values())
    due = await due_counts(client, store, now)
    first = next(s for s in range(SHARDS) if due[s])
    assert due[first] > 4, due  # three parts of two at least: one applies, one is refused

    class AnotherWriterBetweenParts(Scorer):
        interleaved = False

        async def _commit(self, writes: list[ShardWrite]) -> dict[int, list[str] | None]:
            committed = await super()._commit(writes)
            if not self.interleaved:
                self.interleaved = True
                await client.hincrby(store.keys(writes[0].shard).meta, "epoch", 1)
            return committed

    scorer = sweeping(store, now, 2, AnotherWriterBetweenParts)
    conflicts = conflicts_so_far()
    await scorer.sweep(list(range(SHARDS)), 100_000)
    assert conflicts_so_far() == conflicts + 1  # the second part; the third was not sent
    left = await due_counts(client, store, now)
    assert left == [due[s] - 2 if s == first else 0 for s in range(SHARDS)]
    await scorer.sweep(list(range(SHARDS)), 100_000)
    assert conflicts_so_far() == conflicts + 1
    assert await due_counts(client, store, now) == [0] * SHARDS
