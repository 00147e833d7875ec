"""The sweeper on the event clock never judges a customer silent past one of their events
that was released from the event-time buffer but not applied yet.

The chaos suite's ``poison`` and ``rebalance`` scenarios found customers whose churn was
evaluated ahead of one of their events: a sweep that took the lock, then waited on Redis,
let a batch read later records and release its events meanwhile; those events were no
longer "waiting" in the buffer, so the sweep's clock went past them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import orjson
import pytest
import redis.asyncio as aioredis

from scoring.config import load_config
from scoring.engine import Alert, apply_event, evaluate_due
from scoring.state import DAY_S, CustomerState
from streams.dev.services import Endpoints
from streams.pipeline.intake import Decoder, Record, shard_of
from streams.pipeline.processor import AlertTopics, Scorer
from streams.state.store import OutboxEntry, ShardView, StateStore

CONFIG = load_config(None)
SHARDS = 4
T0 = 1_709_251_200.0  # 2024-03-01T00:00:00Z
WALL = T0 + 400 * DAY_S
DEADLINE_S = 15.0


class GatedStore(StateStore):
    """Holds the sweeper's first Redis read until the test lets it go."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        super().__init__(client, namespace)
        self.gated = False
        self.sweep_waiting = asyncio.Event()
        self.go = asyncio.Event()

    async def metas(self, shards: Sequence[int]) -> dict[int, ShardView]:
        if self.gated:
            self.sweep_waiting.set()
            await self.go.wait()
        return await super().metas(shards)


@pytest.fixture
async def client(endpoints: Endpoints) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(endpoints.redis_url)
    yield c
    await c.aclose()


def customers_of_one_shard(shard: int, count: int) -> list[str]:
    found = (f"cust-{i}" for i in range(10_000) if shard_of(f"cust-{i}", SHARDS) == shard)
    return [next(found) for _ in range(count)]


def page_view(customer: str, seq: int, at: float) -> bytes:
    payload = {
        "event_id": f"{customer}#{seq}",
        "customer_id": customer,
        "occurred_at": datetime.fromtimestamp(at, tz=UTC).isoformat("T", "milliseconds"),
        "type": "page_view",
    }
    return orjson.dumps(payload)


def alert_times(entries: Sequence[OutboxEntry], customer: str) -> set[tuple[str, str]]:
    found = set()
    for entry in entries:
        alert = orjson.loads(entry.value)
        if alert["customer_id"] == customer:
            found.add((alert["alert_id"], alert["occurred_at"]))
    return found


def expected_alert_times(alerts: Sequence[Alert]) -> set[tuple[str, str]]:
    return {(a.alert_id, a.occurred_at.isoformat().replace("+00:00", "Z")) for a in alerts}


async def test_a_sweep_waiting_on_redis_does_not_run_ahead_of_a_released_event(
    client: aioredis.Redis, namespace: str
) -> None:
    shard = 1
    silent, other = customers_of_one_shard(shard, 2)
    t1, t2, t3 = T0, T0 + 20 * DAY_S, T0 + 90 * DAY_S
    records = [
        Record("clicks", shard, offset, key.encode(), page_view(key, seq, at), {})
        for offset, (key, seq, at) in enumerate([(silent, 1, t1), (silent, 2, t2), (other, 1, t3)])
    ]
    store = GatedStore(client, namespace)
    scorer = Scorer(
        store,
        Decoder("clicks", "purchases", "feedback", rerouted="rerouted"),
        {"clicks", "purchases", "feedback"},
        CONFIG,
        AlertTopics("churn", "interventions"),
        shards=SHARDS,
        clock="event",
        wall=lambda: WALL,
    )
    first = await scorer.process(records[:1])
    assert first.applied == 1

    # A sweep takes its turn and waits on Redis; meanwhile a batch reads the silent
    # customer's next event and a later one that moves the shard's watermark far past it.
    store.gated = True
    sweep = asyncio.create_task(scorer.sweep([shard], 1000))
    await asyncio.wait_for(store.sweep_waiting.wait(), DEADLINE_S)
    batch = asyncio.create_task(scorer.process(records[1:]))
    deadline = time.monotonic() + DEADLINE_S
    while scorer.buffer.read_marks.get(("clicks", shard)) != t3:
        assert time.monotonic() < deadline, "the batch never read its records"
        await asyncio.sleep(0.01)
    store.go.set()
    swept, _ = await asyncio.wait_for(sweep, DEADLINE_S)
    second = await asyncio.wait_for(batch, DEADLINE_S)
    store.gated = False
    assert second.applied == 2
    last, _ = await scorer.sweep([shard], 1000)

    # The same history folded in time order, then judged up to the shard's last event.
    truth: list[Alert] = []
    state: CustomerState | None = None
    for seq, at in ((1, t1), (2, t2)):
        event = Decoder("clicks", "purchases", "feedback").decode(
            Record("clicks", shard, 0, silent.encode(), page_view(silent, seq, at), {})
        )
        outcome = apply_event(state, event, at, WALL, CONFIG)
        state, truth = outcome.state, [*truth, *outcome.alerts]
    assert state is not None
    due = evaluate_due(state, t3, WALL, CONFIG)
    truth.extend(due.alerts)

    assert truth, "the scenario must make the silent customer's churn alert fire"
    stored = await store.customer(shard, silent)
    assert stored == due.state
    received = [*first.alerts, *swept, *second.alerts, *last]
    assert alert_times(received, silent) == expected_alert_times(truth)
