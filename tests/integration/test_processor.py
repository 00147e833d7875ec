"""The batch scorer against a real Redis: exactly-once state, one round trip per batch,
commit conflicts, the alert outbox, inactivity sweeps, dead letters and Redis outages."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import REGISTRY
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from scoring.config import load_config
from scoring.scores import half_lives
from scoring.state import DAY_S, CustomerState
from streams.dev import services
from streams.dev.services import EmbeddedService, Endpoints
from streams.pipeline.intake import Decoder, Record, shard_of
from streams.pipeline.outcomes import BatchOutcome
from streams.pipeline.processor import AlertTopics, Scorer
from streams.state.store import OutboxEntry, ShardView, ShardWrite, StateStore

CONFIG = load_config(None)
SHARDS = 4
T0 = 1_709_251_200.0  # 2024-03-01T00:00:00Z
DEADLINE_S = 15.0


# --- building blocks ------------------------------------------------------------------


@dataclass
class Wall:
    """The scorer's wall clock, moved by the test."""

    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Topics:
    clicks: str
    purchases: str
    feedback: str
    rerouted: str
    churn: str
    interventions: str

    @classmethod
    def of(cls, prefix: str) -> Topics:
        names = ("clicks", "purchases", "feedback", "rerouted", "churn-risk", "interventions")
        return cls(*(f"{prefix}.{name}" for name in names))


@dataclass
class Feed:
    """Turns event dicts into records on their owner partition, with consecutive offsets."""

    topics: Topics
    next_offset: dict[tuple[str, int], int] = field(default_factory=dict)

    def topic_of(self, event: dict[str, Any]) -> str:
        if event["type"] in ("order", "return", "refund", "cancellation"):
            return self.topics.purchases
        if event["type"] in ("nps", "csat", "review", "support_ticket", "survey"):
            return self.topics.feedback
        return self.topics.clicks

    def record(self, event: dict[str, Any], topic: str | None = None) -> Record:
        return self.raw(topic or self.topic_of(event), event["customer_id"], orjson.dumps(event))

    def raw(self, topic: str, customer_id: str, value: bytes) -> Record:
        tp = (topic, shard_of(customer_id, SHARDS))
        offset = self.next_offset.get(tp, 0)
        self.next_offset[tp] = offset + 1
        return Record(topic, tp[1], offset, customer_id.encode(), value, {})

    def records(self, events: Iterable[dict[str, Any]]) -> list[Record]:
        return [self.record(e) for e in events]

    def highwater(self, topic: str, partition: int) -> int | None:
        """Every record fed so far has been read: the partitions are caught up."""
        return self.next_offset.get((topic, partition))


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


def event(
    eid: str, customer: str, t: float, kind: str = "page_view", **extra: Any
) -> dict[str, Any]:
    return {"event_id": eid, "customer_id": customer, "occurred_at": iso(t), "type": kind, **extra}


def order(
    eid: str, customer: str, t: float, kind: str = "order", amount: str = "25.00"
) -> dict[str, Any]:
    return event(eid, customer, t, kind, order_id=f"o-{eid}", amount=amount, currency="EUR")


def nps(eid: str, customer: str, t: float, score: int) -> dict[str, Any]:
    return event(eid, customer, t, "nps", score=score)


def customers_on(shard: int, count: int, prefix: str = "c") -> list[str]:
    found: list[str] = []
    i = 0
    while len(found) < count:
        if shard_of(f"{prefix}{i}", SHARDS) == shard:
            found.append(f"{prefix}{i}")
        i += 1
    return found


def make_scorer(
    client: aioredis.Redis,
    namespace: str,
    topics: Topics,
    *,
    clock: str = "wall",
    wall: Callable[[], float],
    retry_max_s: float = 5.0,
    store: StateStore | None = None,
) -> Scorer:
    return Scorer(
        store or StateStore(client, namespace),
        Decoder(topics.clicks, topics.purchases, topics.feedback, rerouted=topics.rerouted),
        aligned_topics={topics.clicks, topics.purchases, topics.feedback},
        config=CONFIG,
        alert_topics=AlertTopics(topics.churn, topics.interventions),
        shards=SHARDS,
        clock=clock,
        wall=wall,
        retry_max_s=retry_max_s,
    )


def metric(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


async def poll(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = DEADLINE_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def snapshot(client: aioredis.Redis, namespace: str) -> dict[bytes, Any]:
    """Every key of the namespace and its content; the meta hash without its epoch."""
    out: dict[bytes, Any] = {}
    async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        kind = _text(await client.type(key))
        if kind == "string":
            out[key] = await client.get(key)
        elif kind == "hash":
            meta = await client.hgetall(key)
            meta.pop(b"epoch", None)
            out[key] = meta
        elif kind == "zset":
            out[key] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = await client.xrange(key)
        else:
            raise AssertionError(f"unexpected {kind} key {key!r}")
    return out


async def state_of(store: StateStore, customer: str) -> CustomerState:
    found = await store.customer(shard_of(customer, SHARDS), customer)
    assert found is not None, customer
    return found


def alert_json(entry: OutboxEntry) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(entry.value)
    return decoded


@pytest.fixture
async def client(endpoints: Endpoints) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(endpoints.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def topics(topic_prefix: str) -> Topics:
    return Topics.of(topic_prefix)


# --- redelivery and duplicates --------------------------------------------------------


def mixed_events(customers: Sequence[str], start: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i, c in enumerate(customers):
        t = start + i * 60.0
        events.append(event(f"{c}-v", c, t))
        events.append(event(f"{c}-cart", c, t + 10, "add_to_cart", product_id="p1"))
        events.append(order(f"{c}-o", c, t + 20))
    events.append(nps("detractor", customers[0], start + 3600.0, 2))
    events.append(event("crash", customers[1], start + 3700.0, "payment_error", page="/pay"))
    return events


async def test_redelivered_batch_changes_nothing(
    client: aioredis.Redis, namespace: str, topics: Topics
) -> None:
    wall = Wall(T0 + 2 * 3600.0)
    scorer = make_scorer(client, namespace, topics, wall=wall)
    feed = Feed(topics)
    records = feed.records(mixed_events([f"c{i}" for i in range(8)], T0))

    first = await scorer.process(records)
    assert (first.applied, first.duplicates, first.redelivered) == (len(records), 0, 0)
    assert first.alerts, "the batch should raise alerts, so that their absence later counts"
    before = await snapshot(client, namespace)

    wall.now += 600.0
    again = await scorer.process(records)
    assert (again.applied, again.duplicates, again.redelivered) == (0, 0, len(records))
    assert again.alerts == []
    assert again.dead_letters == [] and again.reroutes == []
    assert await snapshot(client, namespace) == before

    # A batch mixing old and new records applies only the new ones.
    late = feed.record(event("late-view", "c1", T0 + 3800.0))
    mixed = await scorer.process([*records, late])
    assert (mixed.applied, mixed.duplicates, mixed.redelivered) == (1, 0, len(records))
    assert (await state_of(scorer.store, "c1")).counts["events"] == 5


async def test_republished_duplicate_counts_once(
    client: aioredis.Redis, namespace: str, topics: Topics
) -> None:
    scorer = make_scorer(client, namespace, topics, wall=Wall(T0 + 120.0))
    feed = Feed(topics)
    original = event("e-1", "dup-customer", T0)
    first = await scorer.process(
        [feed.record(event("e-0", "dup-customer", T0 - 60)), feed.record(original)]
    )
    assert first.applied == 2
    before = await state_of(scorer.store, "dup-customer")

    republished = feed.record(original)  # same event, next offset
    assert republished.offset == 2
    outcome = await scorer.process([republished])
    assert (outcome.applied, outcome.duplicates, outcome.redelivered) == (0, 1, 0)
    after = await state_of(scorer.store, "dup-customer")
    assert after.counts == before.counts == {"events": 2}
    assert after.decayed == before.decayed
    # The new offset is recorded: redelivering the republished copy is a redelivery.
    assert (await scorer.process([republished])).redelivered == 1


# --- order independence ---------------------------------------------------------------


def history(rng: random.Random, customers: Sequence[str], n: int) -> list[dict[str, Any]]:
    kinds = ["page_view"] * 6 + ["add_to_cart"] * 2 + ["payment_error", "order", "nps"]
    events = []
    for i in range(n):
        c = rng.choice(customers)
        t = T0 + rng.uniform(0, 21 * DAY_S)
        kind = rng.choice(kinds)
        if kind == "order":
            events.append(order(f"h{i}", c, t))
        elif kind == "nps":
            events.append(nps(f"h{i}", c, t, rng.randint(0, 10)))
        else:
            events.append(event(f"h{i}", c, t, kind))
    return events


async def test_order_and_batching_do_not_change_the_state(
    client: aioredis.Redis, namespace: str, topics: Topics
) -> None:
    rng = random.Random(20240301)
    customers = [f"ooo{i}" for i in range(7)]
    assert len({shard_of(c, SHARDS) for c in customers}) > 1
    events = history(rng, customers, 200)

    results: list[dict[str, CustomerState]] = []
    for run in range(3):
        shuffled = events[:]
        rng.shuffle(shuffled)
        scorer = make_scorer(client, f"{namespace}-{run}", topics, clock="event", wall=Wall(T0))
        records = Feed(topics).records(shuffled)
        applied = 0
        while records:
            size = rng.randint(1, 60)
            outcome = await scorer.process(records[:size])
            assert outcome.dead_letters == [] and outcome.reroutes == []
            applied += outcome.applied
            records = records[size:]
        assert applied == len(events)
        results.append({c: await state_of(scorer.store, c) for c in customers})

    at = T0 + 30 * DAY_S
    reference = results[0]
    assert sum(s.counts["events"] for s in reference.values()) == len(events)
    for other in results[1:]:
        for c in customers:
            a, b = reference[c], other[c]
            assert (a.counts, a.first_seen, a.last_seen) == (b.counts, b.first_seen, b.last_seen)
            for name, half_life in half_lives(CONFIG).items():
                va, vb = a.value(name, half_life, at), b.value(name, half_life, at)
                assert math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-300), (c, name, va, vb)
            assert set(a.decayed) == set(b.decayed)


# --- round trips ----------------------------------------------------------------------

# Commands the read and commit scripts run inside Redis (commandstats counts those too).
SCRIPT_COMMANDS = {
    name.lower()
    for script in ("read_shards.lua", "commit_shard.lua")
    for name in re.findall(
        # redis.call('X', ...), and bulk('X', ...): X in chunks (commit_shard.lua)
        r"(?:redis\.call|bulk)\('(\w+)'",
        resources.files("streams.state").joinpath(script).read_text("utf-8"),
    )
}
# Sent by redis-py itself when it opens a connection, or by the test.
HOUSEKEEPING = {"info", "hello", "ping", "select", "auth", "client|setinfo"}


async def command_calls(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def commands_for(
    client: aioredis.Redis, scorer: Scorer, records: list[Record]
) -> tuple[dict[str, int], BatchOutcome]:
    """Commands Redis ran while the scorer processed ``records``, by name."""
    before = await command_calls(client)
    outcome = await scorer.process(records)
    after = await command_calls(client)
    delta = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    return {k: n for k, n in delta.items() if k not in HOUSEKEEPING}, outcome


async def test_one_round_trip_per_batch_not_per_event(
    client: aioredis.Redis, namespace: str, topics: Topics
) -> None:
    assert {"hget", "mset", "zadd", "hincrby"} <= SCRIPT_COMMANDS
    shard = 2
    customers = customers_on(shard, 100, prefix="rt")
    wall = Wall(T0 + DAY_S)

    def batch(per_customer: int) -> list[Record]:
        feed = Feed(topics)
        return feed.records(
            event(f"{c}-{k}", c, T0 + k * 600.0 + i)
            for k in range(per_customer)
            for i, c in enumerate(customers)
        )

    # Warm up: the connection exists and the script is loaded.
    await make_scorer(client, f"{namespace}-warm", topics, wall=wall).process(batch(1))

    small, small_outcome = await commands_for(
        client, make_scorer(client, f"{namespace}-a", topics, wall=wall), batch(1)
    )
    large, large_outcome = await commands_for(
        client, make_scorer(client, f"{namespace}-b", topics, wall=wall), batch(10)
    )
    assert (small_outcome.applied, large_outcome.applied) == (100, 1000)

    for delta in (small, large):
        # One script call reads (meta + customers), one commits; nothing else is sent.
        sent = {k: n for k, n in delta.items() if k not in SCRIPT_COMMANDS}
        assert sent == {"evalsha": 2}, sent
        assert delta.get("hgetall") == 1 and delta.get("mget") == 1, delta
    # Everything Redis ran, the script's commands included, depends on the customers
    # and partitions, not on the number of events (apart from one entry per alert).
    assert sum(large.values()) - len(large_outcome.alerts) == sum(small.values()) - len(
        small_outcome.alerts
    ), (small, large)


@pytest.mark.parametrize("per_shard_calls", [False, True], ids=["batch", "per_shard"])
async def test_a_batch_spanning_shards_is_one_call_on_standalone_redis(
    client: aioredis.Redis, namespace: str, topics: Topics, per_shard_calls: bool
) -> None:
    """A batch over every shard: one read call and one commit call on a standalone Redis;
    with per-shard calls (a cluster, a proxy routing by key) one of each per shard. Both
    apply the same."""
    shards = list(range(SHARDS))
    customers = [c for shard in shards for c in customers_on(shard, 5, prefix="sp")]
    wall = Wall(T0 + DAY_S)
    feed = Feed(topics)
    records = feed.records(event(f"{c}-0", c, T0 + i) for i, c in enumerate(customers))
    store = StateStore(client, namespace, per_shard_calls=per_shard_calls)
    await make_scorer(client, f"{namespace}-warm", topics, wall=wall).process(records)

    delta, outcome = await commands_for(
        client, make_scorer(client, namespace, topics, wall=wall, store=store), records
    )
    assert outcome.applied == len(customers)
    sent = {k: n for k, n in delta.items() if k not in SCRIPT_COMMANDS}
    per_batch = len(shards) if per_shard_calls else 1
    # (HGETALL and MGET count whether sent or run by the read script.)
    if per_shard_calls:
        # Per shard: HGETALL + MGET pipelined, then a pipeline of one EVALSHA per shard.
        assert sent == {"evalsha": per_batch}, sent
        assert delta.get("hgetall") == per_batch and delta.get("mget") == per_batch, delta
    else:
        assert sent == {"evalsha": 2}, sent
        assert delta.get("hgetall") == len(shards) and delta.get("mget") == 1, delta
    views = await store.read({s: customers_on(s, 5, prefix="sp") for s in shards})
    assert {s: v.epoch for s, v in views.items()} == dict.fromkeys(shards, "1")
    assert sum(len(v.customers) for v in views.values()) == len(customers)


# --- concurrent writers ---------------------------------------------------------------


class RendezvousStore(StateStore):
    """A real store whose next commit waits until the other writer has read too, so the
    two commits race on the same epoch."""

    barrier: asyncio.Barrier | None = None

    async def commit(self, writes: Sequence[ShardWrite]) -> dict[int, list[str] | None]:
        barrier, self.barrier = self.barrier, None
        if barrier is not None:
            await barrier.wait()
        return await super().commit(writes)


async def test_concurrent_writers_on_one_shard_apply_every_event_once(
    endpoints: Endpoints, namespace: str, topics: Topics
) -> None:
    shard, rounds, per_round = 1, 12, 15
    customers = customers_on(shard, 6, prefix="cw")
    clients = [aioredis.from_url(endpoints.redis_url) for _ in range(2)]
    stores = [RendezvousStore(c, namespace) for c in clients]
    wall = Wall(T0 + DAY_S)
    clicker, buyer = (
        make_scorer(c, namespace, topics, wall=wall, store=s)
        for c, s in zip(clients, stores, strict=True)
    )
    feed = Feed(topics)
    conflicts_before = metric("engagement_commit_conflicts_total")
    try:
        applied = 0
        for r in range(rounds):
            clicks = feed.records(
                event(f"v{r}-{i}", customers[i % len(customers)], T0 + r * 600 + i)
                for i in range(per_round)
            )
            orders = feed.records(
                order(f"o{r}-{i}", customers[(i + r) % len(customers)], T0 + r * 600 + i)
                for i in range(per_round)
            )
            assert {rec.partition for rec in clicks + orders} == {shard}
            forced = r % 2 == 0  # every other round, both read before either commits
            if forced:
                barrier = asyncio.Barrier(2)
                for store in stores:
                    store.barrier = barrier
            outcomes = await asyncio.wait_for(
                asyncio.gather(clicker.process(clicks), buyer.process(orders)), DEADLINE_S
            )
            for outcome in outcomes:
                assert (outcome.applied, outcome.duplicates, outcome.redelivered) == (
                    per_round,
                    0,
                    0,
                )
                applied += outcome.applied
        conflicts = metric("engagement_commit_conflicts_total") - conflicts_before
        # Each forced round, exactly one of the two racing commits loses and is re-done.
        assert conflicts >= (rounds + 1) // 2

        states = [await state_of(stores[0], c) for c in customers]
        assert sum(s.counts["events"] for s in states) == applied == 2 * rounds * per_round
        assert sum(s.counts.get("orders", 0) for s in states) == rounds * per_round
        meta = (await stores[0].metas([shard]))[shard]
        assert meta.applied_offset(topics.clicks, shard) == rounds * per_round - 1
        assert meta.applied_offset(topics.purchases, shard) == rounds * per_round - 1
    finally:
        for c in clients:
            await c.aclose()


class FlakyStore(StateStore):
    """A real store with two faults injected into one batch: another writer commits the
    victim shard between the batch's read and its commit, then the re-read of that shard
    fails with a connection error."""

    def __init__(self, client: aioredis.Redis, namespace: str, victim: int) -> None:
        super().__init__(client, namespace)
        self.victim = victim
        self.step = 0

    async def read(self, wanted: Mapping[int, Sequence[str]]) -> dict[int, ShardView]:
        if self.step == 1:
            self.step = 2
            raise redis.exceptions.ConnectionError("injected: connection lost")
        return await super().read(wanted)

    async def commit(self, writes: Sequence[ShardWrite]) -> dict[int, list[str] | None]:
        if self.step == 0:
            epoch = (await self.metas([self.victim]))[self.victim].epoch
            assert (await super().commit([ShardWrite(self.victim, epoch)]))[self.victim] == []
            self.step = 1
        return await super().commit(writes)


async def test_retry_after_a_partial_commit_counts_each_record_once(
    client: aioredis.Redis, namespace: str, topics: Topics
) -> None:
    customers = [*customers_on(0, 3, prefix="pc"), *customers_on(1, 3, prefix="pc")]
    store = FlakyStore(client, namespace, victim=1)
    scorer = make_scorer(client, namespace, topics, wall=Wall(T0 + 600.0), store=store)
    records = Feed(topics).records(event(f"pc{i}", c, T0 + i) for i, c in enumerate(customers))
    conflicts = metric("engagement_commit_conflicts_total")
    retries = metric("engagement_redis_retries_total")

    outcome = await scorer.process(records)

    assert store.step == 2, "both faults were injected"
    assert metric("engagement_commit_conflicts_total") == conflicts + 1
    assert metric("engagement_redis_retries_total") == retries + 1
    # Shard 0 was committed before the failure and is not re-done; shard 1 is applied
    # after it. Nothing is counted twice.
    assert (outcome.applied, outcome.duplicates, outcome.redelivered) == (len(records), 0, 0)
    redelivered = REGISTRY.get_sample_value(
        "engagement_events_total", {"topic": topics.clicks, "outcome": "redelivered"}
    )
    assert redelivered in (None, 0.0)
    assert sorted(outcome.done, key=lambda r: (r.partition, r.offset)) == records
    for c in customers:
        assert (await state_of(store, c)).counts == {"events": 1}


# --- the outbox -----------------------------------------------------------------------


async def test_alerts_are_written_to_the_outbox_with_the_state(
    client: aioredis.Redis, namespace: str, topics: Topics
) -> None:
    customer = "unhappy"
    shard = shard_of(customer, SHARDS)
    scorer = make_scorer(client, namespace, topics, wall=Wall(T0 + 300.0))
    feed = Feed(topics)
    records = feed.records([event("u-v", customer, T0), nps("u-nps", customer, T0 + 60.0, 2)])

    outcome = await scorer.process(records)
    interventions = [a for a in outcome.alerts if a.topic == topics.interventions]
    assert len(interventions) == 1
    alert = alert_json(interventions[0])
    assert (alert["kind"], alert["severity"], alert["trigger_event_id"]) == (
        "detractor_feedback",
        "high",
        "u-nps",
    )
    assert alert["customer_id"] == customer and interventions[0].key == customer.encode()

    pending = await scorer.store.pending_outbox([shard], 100)
    assert sorted(pending, key=lambda e: e.entry_id) == sorted(
        outcome.alerts, key=lambda e: e.entry_id
    )
    assert {alert_json(e)["alert_id"] for e in pending} == {
        alert_json(e)["alert_id"] for e in outcome.alerts
    }

    await scorer.store.delete_outbox(pending)
    assert await scorer.store.pending_outbox([shard], 100) == []

    again = await scorer.process(records)
    assert again.redelivered == len(records) and again.alerts == []
    assert await scorer.store.pending_outbox([shard], 100) == []


async def test_sent_alerts_leave_the_outbox_with_their_shards_next_commit(
    client: aioredis.Redis, namespace: str, topics: Topics
) -> None:
    """Alerts Kafka acknowledged (Scorer.sent_alerts, filled by streams/pipeline/delivery.py) are
    deleted by the next commit of their shard, a sweep's or a batch's, with no XDEL of
    their own; the alerts those commits raise stay until they are sent in turn."""
    customer = "unhappy"
    shard = shard_of(customer, SHARDS)
    other = next(c for c in (f"c{i}" for i in range(1000)) if shard_of(c, SHARDS) == shard)
    wall = Wall(T0 + 300.0)
    scorer = make_scorer(client, namespace, topics, wall=wall)
    feed = Feed(topics)
    records = feed.records([event("u-v", customer, T0), nps("u-nps", customer, T0 + 60.0, 2)])
    detractor = (await scorer.process(records)).alerts
    assert detractor
    scorer.sent_alerts.add(detractor, 0.0)

    wall.now += 60 * DAY_S  # silence: the sweep's commit raises churn alerts
    swept, _ = await scorer.sweep([shard], 1000)
    assert churn_alerts(swept)
    outbox = await scorer.store.pending_outbox([shard], 100)
    assert {e.entry_id for e in outbox} == {e.entry_id for e in swept}
    assert len(scorer.sent_alerts) == 0

    scorer.sent_alerts.add(swept, 0.0)
    late = await scorer.process([feed.record(event("o-v", other, wall.now - 60.0))])
    assert late.applied == 1 and late.alerts == []
    assert await scorer.store.pending_outbox([shard], 100) == []
    assert len(scorer.sent_alerts) == 0


# --- silence --------------------------------------------------------------------------


def churn_alerts(entries: Sequence[OutboxEntry]) -> list[dict[str, Any]]:
    return [alert_json(e) for e in entries if alert_json(e)["kind"] == "churn_risk"]


async def test_silence_raises_churn_alerts_on_the_wall_clock(
    client: aioredis.Redis, namespace: str, topics: Topics
) -> None:
    customer = "quiet"
    shard = shard_of(customer, SHARDS)
    wall = Wall(T0)
    scorer = make_scorer(client, namespace, topics, wall=wall)
    feed = Feed(topics)
    for day in range(21):
        wall.now = T0 + day * DAY_S + 60.0
        outcome = await scorer.process([feed.record(event(f"d{day}", customer, T0 + day * DAY_S))])
        assert outcome.applied == 1 and churn_alerts(outcome.alerts) == []
    assert await scorer.sweep([shard], 1000) == ([], 0)  # nothing is due yet

    wall.now += 60 * DAY_S  # no new event: only time passes
    entries, swept = await scorer.sweep([shard], 1000)
    assert swept == 1
    alerts = churn_alerts(entries)
    assert [a["level"] for a in alerts] == ["elevated", "high"]
    assert all(a["trigger"] == {"source": "inactivity", "event_id": None} for a in alerts)
    assert all(a["customer_id"] == customer for a in alerts)
    assert alerts[0]["occurred_at"] < alerts[1]["occurred_at"]
    assert {e.entry_id for e in entries} <= {
        e.entry_id for e in await scorer.store.pending_outbox([shard], 100)
    }
    # Hysteresis: the levels stay fired, and nothing more is due, now or later.
    assert await scorer.sweep([shard], 1000) == ([], 0)
    wall.now += 90 * DAY_S
    assert await scorer.sweep([shard], 1000) == ([], 0)


async def test_silence_on_the_event_clock_follows_the_shards_watermark(
    client: aioredis.Redis, namespace: str, topics: Topics
) -> None:
    shard = 3
    quiet, other = customers_on(shard, 2, prefix="ev")
    wall = Wall(T0)  # the wall clock never moves: only events advance the clock
    scorer = make_scorer(client, namespace, topics, clock="event", wall=wall)
    feed = Feed(topics)
    history = [event(f"q{day}", quiet, T0 + day * DAY_S) for day in range(21)]
    history.append(order("q-order", quiet, T0 + 3600.0))
    assert (await scorer.process(feed.records(history))).applied == len(history)
    assert await scorer.sweep([shard], 1000) == ([], 0)

    # The purchases partition has records not read yet: it holds the shard's clock back,
    # and another customer's event 60 days later waits for it.
    def purchases_behind(topic: str, partition: int) -> int | None:
        end = feed.highwater(topic, partition)
        return end + 1 if end is not None and topic == topics.purchases else end

    scorer.buffer.highwater = purchases_behind
    later = feed.record(event("other-late", other, T0 + 80 * DAY_S))
    held = await scorer.process([later])
    assert held.applied == 0 and held.done == []
    assert await scorer.sweep([shard], 1000) == ([], 0)

    # Every partition read to its end: the later event is applied and the clock reaches it.
    scorer.buffer.highwater = feed.highwater
    released = await scorer.release()
    assert released.applied == 1 and released.done == [later]
    assert churn_alerts(released.alerts) == []
    entries, swept = await scorer.sweep([shard], 1000)
    assert swept == 1
    alerts = churn_alerts(entries)
    assert [(a["customer_id"], a["level"]) for a in alerts] == [
        (quiet, "elevated"),
        (quiet, "high"),
    ]
    assert all(a["trigger"] == {"source": "inactivity", "event_id": None} for a in alerts)
    assert all(datetime.fromisoformat(a["emitted_at"]).timestamp() == T0 for a in alerts)
    assert await scorer.sweep([shard], 1000) == ([], 0)


# --- dead letters ---------------------------------------------------------------------


async def test_unscorable_records_become_dead_letters(
    client: aioredis.Redis, namespace: str, topics: Topics
) -> None:
    scorer = make_scorer(client, namespace, topics, wall=Wall(T0 + 600.0))
    feed = Feed(topics)
    naive = event("naive", "dl", T0)
    naive["occurred_at"] = "2024-03-01T00:00:00"
    records = [
        feed.record(event("ok-1", "dl", T0)),
        feed.raw(topics.clicks, "dl", b'{"event_id": "broken", "customer_id": '),
        feed.record(naive),
        feed.record(order("ok-2", "dl", T0 + 1)),
        feed.record(order("negative", "dl", T0 + 2, amount="-5.00")),
        feed.record(order("teleport", "dl", T0 + 3, kind="teleport"), topics.purchases),
        feed.raw(topics.feedback, "dl", orjson.dumps(event("no-score", "dl", T0, "nps"))),
        feed.record(event("ok-3", "dl", T0 + 4, "add_to_cart")),
    ]
    outcome = await scorer.process(records)
    by_event = {d.record.value: d.reason for d in outcome.dead_letters}
    assert len(outcome.dead_letters) == 5, outcome.dead_letters
    assert "json" in by_event[records[1].value].lower()
    assert (
        by_event[records[2].value].startswith("occurred_at:")
        and "timezone" in by_event[records[2].value]
    )
    assert by_event[records[4].value].startswith("amount:")
    assert by_event[records[5].value].startswith("type:")
    assert "score" in by_event[records[6].value]
    assert [d.record for d in outcome.dead_letters] == [records[i] for i in (1, 2, 4, 5, 6)]

    assert outcome.applied == 3 and outcome.reroutes == []
    state = await state_of(scorer.store, "dl")
    assert state.counts == {"events": 3, "orders": 1}
    # The offsets of dead letters are consumed like any other (their records are handled).
    meta = (await scorer.store.metas([shard_of("dl", SHARDS)]))[shard_of("dl", SHARDS)]
    assert meta.applied_offset(topics.clicks, records[0].partition) == records[-1].offset


# --- Redis outage ---------------------------------------------------------------------


async def test_scoring_waits_out_a_redis_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topics: Topics, namespace: str
) -> None:
    first = EmbeddedService.start("redis", tmp_path / "first", detached=False)
    second: EmbeddedService | None = None
    client: aioredis.Redis | None = None
    try:
        await asyncio.to_thread(first.wait_ready, DEADLINE_S)
        port = first.port
        # Few client-level retries, so the outage reaches the scorer's own retry loop.
        client = aioredis.from_url(
            f"redis://127.0.0.1:{port}/0",
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=0.5,
            socket_timeout=1.0,
        )
        scorer = make_scorer(client, namespace, topics, wall=Wall(T0 + 600.0), retry_max_s=0.2)
        feed = Feed(topics)
        customers = [f"out{i}" for i in range(6)]
        assert (await scorer.process(feed.records([event("warm", "out0", T0)]))).applied == 1

        events = [event(f"e{i}", customers[i % 6], T0 + i) for i in range(30)]
        records = feed.records(events)
        await asyncio.to_thread(first.stop)
        retries_before = metric("engagement_redis_retries_total")
        task = asyncio.create_task(scorer.process(records))

        async def retried() -> bool:
            if task.done():  # it must not give up (nor succeed) while Redis is down
                raise AssertionError(f"process() ended during the outage: {task.result()}")
            return metric("engagement_redis_retries_total") >= retries_before + 3

        await poll(retried, "the scorer to retry")
        assert not task.done()

        monkeypatch.setattr(services, "free_port", lambda: port)
        second = EmbeddedService.start("redis", tmp_path / "second", detached=False)
        await asyncio.to_thread(second.wait_ready, DEADLINE_S)
        outcome = await asyncio.wait_for(task, DEADLINE_S)

        assert (outcome.applied, outcome.duplicates, outcome.redelivered) == (len(records), 0, 0)
        states = [await state_of(scorer.store, c) for c in customers]
        # The new server started empty: exactly the batch, once.
        assert sum(s.counts["events"] for s in states) == len(records)
        assert metric("engagement_redis_retries_total") > retries_before
    finally:
        if client is not None:
            await client.aclose()
        for service in (first, second):
            if service is not None:
                await asyncio.to_thread(service.stop)
