"""Replaying history on the event clock yields the same scores and alerts as living it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from state_checks import differing_fields, read_states

from scoring.config import load_config
from streams.dev.services import Endpoints
from streams.dev.simulator import SimEvent, encode, generate
from streams.pipeline.intake import Decoder, Record, shard_of
from streams.pipeline.processor import AlertTopics, Scorer
from streams.state.store import StateStore

SHARDS = 4
TOPICS = {"clickstream": "clicks", "purchases": "purchases", "feedback": "feedback"}


@pytest.fixture
async def client(endpoints: Endpoints) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(endpoints.redis_url)
    yield c
    await c.aclose()


def scorer(client: aioredis.Redis, namespace: str, clock: str, wall: list[float]) -> Scorer:
    return Scorer(
        StateStore(client, namespace),
        Decoder(*TOPICS.values(), rerouted="rerouted"),
        set(TOPICS.values()),
        load_config(None),
        AlertTopics("churn", "interventions"),
        shards=SHARDS,
        clock=clock,
        wall=lambda: wall[0],
    )


def as_records(events: list[SimEvent]) -> list[tuple[float, Record]]:
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for e in events:
        tp = (TOPICS[e.source], shard_of(e.customer_id, SHARDS))
        offsets[tp] = offsets.get(tp, -1) + 1
        record = Record(tp[0], tp[1], offsets[tp], e.customer_id.encode(), encode(e), {})
        out.append((e.occurred_at.timestamp(), record))
    return out


async def test_a_replay_on_the_event_clock_matches_living_through_it_on_the_wall_clock(
    client: aioredis.Redis, namespace: str
) -> None:
    events = generate(16, 75, 11, datetime(2026, 1, 1, tzinfo=UTC))
    records = as_records(events)

    # Living through it: each event is processed the moment it happens, and the sweeper
    # runs every simulated hour in between.
    wall = [records[0][0]]
    live = scorer(client, f"{namespace}live", "wall", wall)
    live_alerts = []
    hour = 3600.0
    last_sweep = records[0][0]
    for t, record in records:
        while last_sweep + hour <= t:
            last_sweep += hour
            wall[0] = last_sweep
            live_alerts += (await live.sweep(list(range(SHARDS)), 10_000))[0]
        wall[0] = t
        live_alerts += (await live.process([record])).alerts
    wall[0] = records[-1][0]
    live_alerts += (await live.sweep(list(range(SHARDS)), 10_000))[0]

    # Replaying it, with the worst read order: every clickstream record before any purchase
    # or feedback record, in batches of 500, while the consumer reports what is left.
    replay = scorer(client, f"{namespace}replay", "event", wall)
    ends: dict[tuple[str, int], int] = {}
    for _, r in records:
        ends[(r.topic, r.partition)] = r.offset + 1
    replay.buffer.highwater = lambda topic, partition: ends.get((topic, partition), 0)
    order = sorted(records, key=lambda tr: list(TOPICS.values()).index(tr[1].topic))
    replay_alerts = []
    for i in range(0, len(order), 500):
        replay_alerts += (await replay.process([r for _, r in order[i : i + 500]])).alerts
        replay_alerts += (await replay.sweep(list(range(SHARDS)), 10_000))[0]
    replay_alerts += (await replay.release()).alerts
    assert replay.buffer.held == 0
    replay_alerts += (await replay.sweep(list(range(SHARDS)), 10_000))[0]

    def ids(entries: list[object]) -> set[bytes]:
        return {e.value[: e.value.index(b",")] for e in entries}

    assert any(b"churn_risk" in e.value for e in live_alerts), "the workload must alert"
    assert ids(replay_alerts) == ids(live_alerts)
    assert len(replay_alerts) == len(live_alerts)

    lived, replayed = (
        await read_states(client, f"{namespace}live"),
        await read_states(client, f"{namespace}replay"),
    )
    assert lived.keys() == replayed.keys() and len(lived) == 16
    config = load_config(None)
    differing = {c: differing_fields(replayed[c], a, config) for c, a in lived.items()}
    assert {c: f for c, f in differing.items() if f} == {}
