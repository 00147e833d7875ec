"""Population KPIs kept incrementally in real Redis, against a batch computation over the
same events; exactly once under redelivery and lost replies; old day buckets pruned."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import REGISTRY
from worker_harness import event, produce, running_workers, settings_of, wait_for, worker_env

from schemas.events import InputEvent
from scoring.config import ScoringConfig, load_config
from scoring.engine import apply_event, evaluate_due
from scoring.kpis import customer_flags, deltas, diff, event_counts, kpis
from scoring.state import CustomerState
from streams import cli
from streams.dev.services import Endpoints
from streams.dev.simulator import SimEvent, encode, generate
from streams.pipeline.intake import Decoder, Record, shard_of
from streams.pipeline.processor import AlertTopics, Scorer
from streams.state import kpis as stream_kpis
from streams.state.kpis import GAUGE_REFRESH_S, KpiSource, day_of, read_counters, read_kpis
from streams.state.store import ShardKeys, ShardWrite, StateStore


@functools.cache
def config() -> ScoringConfig:
    return load_config(None)


SHARDS = 4
START = datetime(2024, 3, 1, tzinfo=UTC)
WINDOW_DAYS = 30
BATCH = 400


@dataclass
class Wall:
    now: float = START.timestamp()

    def __call__(self) -> float:
        return self.now


@dataclass
class Feed:
    """Simulator events as records on their owner partition, with consecutive offsets."""

    prefix: str
    next_offset: dict[tuple[str, int], int] = field(default_factory=dict)

    def topic(self, source: str) -> str:
        return f"{self.prefix}.{source}"

    def records(self, events: Iterable[SimEvent]) -> list[Record]:
        out = []
        for e in events:
            tp = (self.topic(e.source), shard_of(e.customer_id, SHARDS))
            offset = self.next_offset.get(tp, 0)
            self.next_offset[tp] = offset + 1
            out.append(Record(tp[0], tp[1], offset, e.customer_id.encode(), encode(e), {}))
        return out

    def highwater(self, topic: str, partition: int) -> int | None:
        """Every record fed so far has been read: the partitions are caught up."""
        return self.next_offset.get((topic, partition))

    def decoder(self) -> Decoder:
        return Decoder(*(self.topic(s) for s in ("clickstream", "purchases", "feedback")))


def make_scorer(
    store: StateStore, feed: Feed, clock: str = "event", wall: Wall | None = None
) -> Scorer:
    sources = ("clickstream", "purchases", "feedback")
    scorer = Scorer(
        store,
        feed.decoder(),
        aligned_topics={feed.topic(s) for s in sources},
        config=config(),
        alert_topics=AlertTopics(feed.topic("churn-risk"), feed.topic("interventions")),
        shards=SHARDS,
        clock=clock,
        wall=wall or Wall(),
    )
    scorer.buffer.highwater = feed.highwater
    return scorer


async def sweep_all(scorer: Scorer) -> None:
    while (await scorer.sweep(list(range(SHARDS)), 1000))[1] >= 1000:
        pass


async def stream(scorer: Scorer, feed: Feed, events: Sequence[SimEvent]) -> None:
    """Everything through the scorer in batches, the sweeper running between them."""
    records = feed.records(events)
    for lo in range(0, len(records), BATCH):
        outcome = await scorer.process(records[lo : lo + BATCH])
        assert outcome.dead_letters == [] and outcome.reroutes == []
        await sweep_all(scorer)
    await scorer.release()
    await sweep_all(scorer)


@dataclass
class Batch:
    """The same events folded offline by the scoring code alone, no Redis, no batches."""

    states: dict[str, CustomerState]
    # Event counters by the day of the event that moved them.
    event_days: dict[int, dict[str, float]]


def fold(events: Sequence[SimEvent], prefix: str, ends: dict[int, float]) -> Batch:
    """Each customer's events in order, each at its own time (the event clock), then the
    inactivity checks due up to the end of the customer's shard clock (``ends``)."""
    states: dict[str, CustomerState] = {}
    event_days: dict[int, dict[str, float]] = {}
    feed = Feed(prefix)
    decoder = feed.decoder()
    for record in feed.records(events):
        event: InputEvent = decoder.decode(record)
        t = event.occurred_at.timestamp()
        before = states.get(event.customer_id)
        after = apply_event(before, event, t, START.timestamp(), config()).state
        day = event_days.setdefault(day_of(t), {})
        for name, delta in diff(event_counts(after), event_counts(before)).items():
            day[name] = day.get(name, 0.0) + delta
        states[event.customer_id] = after
    for cid, state in states.items():
        end = ends[shard_of(cid, SHARDS)]
        states[cid] = evaluate_due(state, end, START.timestamp(), config()).state
    return Batch(states, event_days)


def all_time(states: Iterable[CustomerState]) -> dict[str, float]:
    total: dict[str, float] = {}
    for state in states:
        for name, delta in deltas(None, state).items():
            total[name] = total.get(name, 0.0) + delta
    return total


def windowed(batch: Batch, today: int, days: int) -> dict[str, float]:
    """Event counters of the events in the window; customer flags of the customers first
    seen in it, as they are now."""
    first = today - days + 1
    total: dict[str, float] = {}
    for day, counters in batch.event_days.items():
        if first <= day <= today:
            for name, value in counters.items():
                total[name] = total.get(name, 0.0) + value
    for state in batch.states.values():
        if first <= day_of(state.first_seen) <= today:
            for name, value in customer_flags(state).items():
                total[name] = total.get(name, 0.0) + value
    return total


def assert_counters_equal(got: dict[str, float], expected: dict[str, float], what: str) -> None:
    names = {n for n in got.keys() | expected.keys() if got.get(n) or expected.get(n)}
    for name in sorted(names):
        a, b = got.get(name, 0.0), expected.get(name, 0.0)
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6), (what, name, a, b)


async def hash_of(client: aioredis.Redis, key: str) -> dict[bytes, bytes]:
    raw: dict[Any, Any] = await client.hgetall(key)
    return raw


@pytest.fixture
async def client(endpoints: Endpoints) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(endpoints.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    return generate(80, 60, 3, START)


@pytest.mark.parametrize("retention_days", [90, 20])
async def test_streamed_kpis_equal_a_batch_computation(
    client: aioredis.Redis,
    namespace: str,
    topic_prefix: str,
    events: list[SimEvent],
    retention_days: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 20 days kept: most of the 60 days of day buckets are pruned on the way, and the
    # (smaller) window must still be exact.
    monkeypatch.setattr(stream_kpis, "RETENTION_DAYS", retention_days)
    window_days = min(WINDOW_DAYS, retention_days)
    feed = Feed(topic_prefix)
    store = StateStore(client, namespace)
    scorer = make_scorer(store, feed)
    await stream(scorer, feed, events)

    ends = {s: scorer.buffer.clock(s) for s in range(SHARDS)}
    assert all(end is not None for end in ends.values()), ends
    shard_ends = {s: float(end) for s, end in ends.items() if end is not None}
    now = max(shard_ends.values())
    got_all, got_window = await read_counters(client, namespace, SHARDS, now, window_days)

    # 1. The incremental counters are those of the states now in Redis.
    stored = [await store.customer(shard_of(e.customer_id, SHARDS), e.customer_id) for e in events]
    by_id = {s.customer_id: s for s in stored if s is not None}
    assert len(by_id) == len({e.customer_id for e in events})
    assert_counters_equal(got_all, all_time(by_id.values()), "all-time vs stored states")

    # 2. ... and those of a batch computation over the same events.
    batch = fold(events, topic_prefix, shard_ends)
    assert_counters_equal(got_all, all_time(batch.states.values()), "all-time vs batch")
    today = day_of(now)
    expected_window = windowed(batch, today, window_days)
    assert_counters_equal(got_window, expected_window, "window vs batch")

    # The comparison is not vacuous: the window holds part of the population only, and
    # the KPIs the simulator can produce are defined.
    assert 0 < got_window["customers"] < got_all["customers"] == len(by_id)
    assert got_all["orders"] > got_window["orders"] > 0
    found = await read_kpis(client, namespace, SHARDS, now, window_days)
    assert found["all_time"] == pytest.approx(kpis(all_time(batch.states.values())))
    assert found["window"] == pytest.approx(kpis(expected_window))
    for name in ("nps", "csat_pct", "repurchase_rate", "conversion_rate", "bounce_rate"):
        assert found["all_time"][name] is not None, name

    # Day fields older than the retention are gone.
    kept = await hash_of(client, ShardKeys(namespace, 0).kpi)
    days = {int(k.split(b":")[1]) for k in kept if k.startswith(b"d:")}
    assert days and min(days) >= day_of(shard_ends[0]) - retention_days + 1, (days, today)
    if retention_days < 60:
        assert int(kept[b"lo"]) > day_of(START.timestamp())

    # The gauges show what the reader reads.
    await KpiSource(client, namespace, SHARDS, "event", window_days).refresh_gauges()
    for view, label in (("all_time", "all"), ("window", f"{window_days}d")):
        for kpi in ("nps", "repurchase_rate", "customers"):
            value = REGISTRY.get_sample_value("engagement_kpi", {"kpi": kpi, "window": label})
            assert value == pytest.approx(found[view][kpi]), (view, kpi)


def sim_event(event_id: str, customer: str, at: datetime, type_: str, **fields: Any) -> SimEvent:
    payload = {"event_id": event_id, "customer_id": customer, "occurred_at": at.isoformat(),
               "type": type_, **fields}  # fmt: skip
    source = "purchases" if type_ == "order" else "clickstream"
    return SimEvent(source, customer, at, payload, "test")


async def test_a_late_first_event_moves_the_customer_to_an_earlier_cohort(
    client: aioredis.Redis, namespace: str, topic_prefix: str
) -> None:
    """On the wall clock, a customer first seen today, then an event of 40 days ago: the
    customer leaves the 30-day cohort, and the late order counts on the day it is scored."""
    now = START.timestamp() + 100 * 86_400.0
    wall = Wall(now)
    feed = Feed(topic_prefix)
    scorer = make_scorer(StateStore(client, namespace), feed, clock="wall", wall=wall)
    today = datetime.fromtimestamp(now - 3600, tz=UTC)
    first = feed.records([sim_event("v1", "late", today, "page_view", session_id="s1")])
    assert (await scorer.process(first)).applied == 1
    got_all, got_window = await read_counters(client, namespace, SHARDS, now, 30)
    assert got_all["customers"] == got_window["customers"] == 1

    long_ago = datetime.fromtimestamp(now - 40 * 86_400.0, tz=UTC)
    item = {"product_id": "p1", "quantity": 1, "unit_price": "9.00"}
    late = sim_event("o1", "late", long_ago, "order", order_id="o1", amount="9.00",
                     currency="EUR", items=[item])  # fmt: skip
    assert (await scorer.process(feed.records([late]))).applied == 1
    got_all, got_window = await read_counters(client, namespace, SHARDS, now, 30)
    assert got_all["customers"] == 1 and got_all["buyers"] == 1
    assert got_window.get("customers", 0.0) == 0.0 and got_window.get("buyers", 0.0) == 0.0
    assert got_window["orders"] == 1  # scored today, by the scorer's (wall) clock
    _, longer = await read_counters(client, namespace, SHARDS, now, 41)
    assert longer["customers"] == 1 and longer["buyers"] == 1


async def kpi_hash(client: aioredis.Redis, namespace: str) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for shard in range(SHARDS):
        fields.update(await hash_of(client, ShardKeys(namespace, shard).kpi))
    return fields


class LostReplyStore(StateStore):
    """A real store whose first commit runs in Redis but whose reply never arrives."""

    lost = False

    async def commit(self, writes: Sequence[ShardWrite]) -> dict[int, list[str] | None]:
        result = await super().commit(writes)
        if not self.lost:
            self.lost = True
            raise redis.exceptions.ConnectionError("injected: reply lost")
        return result


async def test_redelivery_and_lost_replies_count_once(
    client: aioredis.Redis, namespace: str, topic_prefix: str, events: list[SimEvent]
) -> None:
    part = events[:1500]
    reference = f"{namespace}-ref"
    feed = Feed(topic_prefix)
    records = feed.records(part)
    clean = make_scorer(StateStore(client, reference), feed)
    assert (await clean.process(records)).applied == len(records)
    expected = await kpi_hash(client, reference)
    assert expected

    lossy = LostReplyStore(client, namespace)
    scorer = make_scorer(lossy, feed)
    outcome = await scorer.process(records)
    assert lossy.lost
    # The retry finds the first shard's batch applied: its records are redelivered.
    assert outcome.redelivered > 0 and outcome.applied + outcome.redelivered == len(records)
    assert await kpi_hash(client, namespace) == expected

    again = await scorer.process(records)
    assert again.redelivered == len(records) and again.applied == 0
    assert await kpi_hash(client, namespace) == expected


async def test_old_day_buckets_are_pruned_and_never_rewritten(
    client: aioredis.Redis, namespace: str
) -> None:
    store = StateStore(client, namespace)
    key = ShardKeys(namespace, 1).kpi

    async def commit(cutoff: int | None, kpi: dict[str, float]) -> None:
        epoch = (await store.metas([1]))[1].epoch
        write = ShardWrite(1, epoch, kpi=kpi, kpi_cutoff_day=cutoff)
        assert (await store.commit([write]))[1] == []

    await commit(100, {"a:orders": 3, "d:100:orders": 1, "d:105:orders": 2, "a:clv_sum": 0.1})
    await commit(100, {"a:clv_sum": 0.2, "d:99:orders": 5, "d:105:orders": 1})
    assert await hash_of(client, key) == {
        b"lo": b"100",
        b"a:orders": b"3",
        b"a:clv_sum": repr(0.1 + 0.2).encode(),  # exact doubles, not 14-digit strings
        b"d:100:orders": b"1",
        b"d:105:orders": b"3",
    }
    await commit(104, {"a:orders": 1, "d:103:orders": 7, "d:106:orders": 1})
    assert await hash_of(client, key) == {
        b"lo": b"104",
        b"a:orders": b"4",
        b"a:clv_sum": repr(0.1 + 0.2).encode(),
        b"d:105:orders": b"3",
        b"d:106:orders": b"1",
    }
    await commit(90, {"d:100:orders": 1})  # an older clock moves nothing back
    assert b"d:100:orders" not in await hash_of(client, key)
    assert (await client.hget(key, "lo")) == b"104"


def test_the_kpis_command(endpoints: Endpoints, namespace: str, topic_prefix: str,
                          events: list[SimEvent], monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    async def populate() -> dict[str, dict[str, float | None]]:
        client = aioredis.from_url(endpoints.redis_url)
        try:
            feed = Feed(topic_prefix)
            scorer = make_scorer(StateStore(client, namespace), feed)
            await stream(scorer, feed, events[:2000])
            now = max(c for s in range(SHARDS) if (c := scorer.buffer.clock(s)) is not None)
            return await read_kpis(client, namespace, SHARDS, now, 7)
        finally:
            await client.aclose()

    expected = asyncio.run(populate())
    monkeypatch.setenv("ENGAGEMENT_REDIS_URL", endpoints.redis_url)
    monkeypatch.setenv("ENGAGEMENT_NAMESPACE", namespace)
    monkeypatch.setenv("ENGAGEMENT_PARTITIONS", str(SHARDS))
    monkeypatch.setenv("ENGAGEMENT_CLOCK", "event")
    assert cli.main(["kpis", "--json", "--window-days", "7"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["window_days"] == 7
    assert report["all_time"] == pytest.approx(expected["all_time"])
    assert report["window"] == pytest.approx(expected["window"])

    assert cli.main(["kpis"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["kpi", "all", "time", "last", "30d"]
    assert any(line.split()[0] == "repurchase_rate" for line in table.splitlines())

    assert cli.main(["kpis", "--window-days", "0"]) == 2
    assert "window_days" in capsys.readouterr().err


def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body, error statuses included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_a_worker_serves_the_kpis_over_http_and_as_gauges(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    env = worker_env(endpoints, test_token, tmp_path)
    s = settings_of(env)
    day = 0.0
    records: list[tuple[str, str | bytes | None, bytes, int | None]] = []

    def add(topic: str, customer: str, type_: str, **fields: Any) -> None:
        nonlocal day
        day += 0.01
        value = event(f"e{len(records)}", customer, day, type_, **fields)
        records.append((topic, customer, value, None))

    def order(customer: str, n: int) -> None:
        item = {"product_id": f"p{n}", "quantity": 1, "unit_price": "10.00"}
        add(s.topic_purchases, customer, "order", order_id=f"o{n}", amount="10.00",
            currency="EUR", items=[item])  # fmt: skip

    add(s.topic_clickstream, "alice", "page_view", session_id="sa", page="/")
    order("alice", 1)
    add(s.topic_feedback, "alice", "nps", score=10)
    order("bob", 2)
    order("bob", 3)
    add(s.topic_feedback, "bob", "nps", score=3)
    add(s.topic_clickstream, "carol", "page_view", session_id="sc", page="/")

    with running_workers(env, 1, tmp_path) as (worker,):
        await produce(s.kafka_bootstrap, records)

        def served() -> dict[str, Any]:
            body = worker.get("/kpis")
            return dict(json.loads(body)) if body.startswith("{") else {}

        def all_counted() -> bool:
            return bool(served().get("all_time", {}).get("customers") == 3)

        wait_for(all_counted, 60, "the /kpis view to count 3 customers", worker)
        report = served()
        # One promoter and one detractor of two answers; bob alone ordered twice.
        assert report["all_time"]["nps"] == pytest.approx(0.0)
        assert report["all_time"]["repurchase_rate"] == pytest.approx(100 / 3)
        assert report["window_days"] == 30 and report["window"]["customers"] == 3
        status, body = http_get(worker.port, "/kpis?window_days=0")
        assert status == 400 and "window_days" in json.loads(body)["error"]

        def gauged() -> bool:
            return bool(worker.metric("engagement_kpi", kpi="customers", window="all") == 3)

        wait_for(gauged, 3 * GAUGE_REFRESH_S, "the KPI gauges to be refreshed", worker)
        assert worker.metric("engagement_kpi", kpi="repurchase_rate", window="30d") == (
            pytest.approx(100 / 3)
        )
