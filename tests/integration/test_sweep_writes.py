"""Scorer.sweep writes what the plain sweep writes, byte for byte.

The sweeper patches the stored blob of a customer whose check time alone moved and leaves
such customers out of the KPI deltas (streams/pipeline/sweeper.py ``sweep_shard``). Compared
here with the straightforward sweep -- decode every state, ``evaluate_due``, count every
customer with ``KpiDelta.add_evaluation``, encode every state -- run on a copy of the same
Redis data in another namespace: states, due schedule, KPI hash and outbox must be equal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import REGISTRY

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring import codec
from scoring.config import load_config
from scoring.engine import apply_event, evaluate_due
from scoring.state import CustomerState
from streams.dev.services import Endpoints
from streams.dev.simulator import generate
from streams.pipeline.intake import Decoder, shard_of
from streams.pipeline.processor import AlertTopics, Scorer
from streams.pipeline.sweeper import COMMIT_CUSTOMERS, LAST_PART_CUSTOMERS, DuePages, commit_parts
from streams.state.kpis import KpiDelta
from streams.state.store import ShardWrite, StateStore

CONFIG = load_config(None)
S = TypeVar("S", bound=Scorer)
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
    store: StateStore,
    now: float,
    commit_customers: int,
    kind: type[S] = Scorer,  # type: ignore[assignment]  # mypy takes no default for a TypeVar
    last_part: int = LAST_PART_CUSTOMERS,
) -> S:
    """A scorer on the wall clock stopped at ``now``, committing a shard's page in parts of
    ``commit_customers``, the sweep's last page ending in one of ``last_part``."""
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
    scorer.sweep_last_part_customers = last_part
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


class PartsRecorded(Scorer):
    """Records how many customers each part of each shard's page committed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parts: list[list[int]] = [[] for _ in range(SHARDS)]

    async def _commit(self, writes: list[ShardWrite]) -> dict[int, list[str] | None]:
        for w in writes:
            self.parts[w.shard].append(len(w.states) + len(w.settled))
        return await super()._commit(writes)


@pytest.mark.parametrize(
    ("commit_customers", "last_part"),
    [(COMMIT_CUSTOMERS, LAST_PART_CUSTOMERS), (4, 4), (4, 1)],
    ids=["one part", "parts", "parts, a smaller last"],
)
async def test_the_sweep_writes_what_the_plain_sweep_writes(
    client: aioredis.Redis,
    namespace: str,
    legacy_json: Callable[[CustomerState], bytes],
    commit_customers: int,
    last_part: int,
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
    scorer = sweeping(swept, now, commit_customers, PartsRecorded, last_part)
    conflicts = conflicts_so_far()
    epochs = [int(await client.hget(swept.keys(s).meta, "epoch") or 0) for s in range(SHARDS)]
    due = await due_counts(client, swept, now)
    entries, most_per_shard = await scorer.sweep(list(range(SHARDS)), 100_000)
    await plain_sweep(plain, now)
    assert conflicts_so_far() == conflicts
    moved = [
        int(await client.hget(swept.keys(s).meta, "epoch") or 0) - e for s, e in enumerate(epochs)
    ]
    # The shards are read in order; the last one's page ends in a part of ``last_part``.
    assert all(due), due
    expected = [
        [
            len(p)
            for p in commit_parts(dict.fromkeys(map(str, range(n)), b""), commit_customers, last)
        ]
        for n, last in zip(due, [None] * (SHARDS - 1) + [last_part], strict=True)
    ]
    assert scorer.parts == expected
    assert moved == [len(sizes) for sizes in expected], (moved, due)
    assert max(moved) > (1 if commit_customers < COMMIT_CUSTOMERS else 0)
    assert expected[-1][-1] <= last_part

    before = {s.customer_id: s for s in silent}
    after = {
        c: codec.decode(b)
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


async def test_due_pages_are_each_shards_page_in_the_order_given(
    client: aioredis.Redis, namespace: str
) -> None:
    """A page per shard with customers due (at most the limit, listed in due order), in the
    order of the shards given; a customer listed due without a state is counted, not read."""
    states = simulated_states(40, 45.0)
    end = (START + timedelta(days=45)).timestamp()
    store = StateStore(client, namespace)
    await write_copy(client, store, states, [], [], lambda s: b"")
    await client.zadd(store.keys(2).due, {"deleted": 0.0})
    now = end + 30 * 86_400.0
    order = {3: now, 1: 0.0, 0: now, 2: now}  # nothing of shard 1 is due by its time
    pages = DuePages(store, order, 5)
    got = []
    async for page in pages:
        got.append((page.view.shard, list(page.blobs), page.listed, pages.exhausted))
    await pages.aclose()
    expected = []
    for shard in (3, 0, 2):
        members = await client.zrange(store.keys(shard).due, 0, 4)
        listed = [m.decode() for m in members if isinstance(m, bytes)]
        stored = [c for c in listed if await client.exists(store.keys(shard).customer(c))]
        expected.append((shard, stored, len(listed), shard == 2))
    assert got == expected
    assert got[-1][2] == len(got[-1][1]) + 1  # "deleted", first due in shard 2
    assert all(listed == 5 for _, _, listed, _ in got)


async def test_due_pages_stop_reading_when_closed_and_raise_what_a_read_raised(
    client: aioredis.Redis, namespace: str
) -> None:
    states = simulated_states(40, 45.0)
    end = (START + timedelta(days=45)).timestamp()
    store = StateStore(client, namespace)
    await write_copy(client, store, states, [], [], lambda s: b"")
    now = end + 30 * 86_400.0
    pages = DuePages(store, dict.fromkeys(range(SHARDS), now), 5)
    first = await anext(pages)
    assert first.view.shard == 0 and not pages.exhausted
    await pages.aclose()  # the next shard's read, under way, is stopped
    assert pages.exhausted
    assert [p async for p in pages] == []

    unreachable = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)
    failing = DuePages(StateStore(unreachable, namespace), {0: now}, 5)
    with pytest.raises(redis.exceptions.ConnectionError):
        await anext(failing)
    await failing.aclose()
    await unreachable.aclose()
