"""The whole worker, as a subprocess, against the real broker and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
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

from scoring import COMPILED
from scoring.config import load_config
from streams.dev.services import EmbeddedService, Endpoints
from streams.dev.simulator import generate, publish
from streams.kafka.topics import ensure_topics
from streams.pipeline.intake import Decoder, Record, shard_of
from streams.pipeline.processor import AlertTopics, Scorer
from streams.settings import Settings
from streams.state.store import StateStore

PARTITIONS = 4


def _customer_on_shard(shard: int, prefix: str) -> str:
    return next(
        f"{prefix}{i}" for i in range(10_000) if shard_of(f"{prefix}{i}", PARTITIONS) == shard
    )


@pytest.mark.parametrize("ingest", ["batches", "agent"])
async def test_scores_events_and_dead_letters_bad_input(
    endpoints: Endpoints, test_token: str, tmp_path: Path, ingest: str
) -> None:
    # The agent path also runs on asyncio's own loop (the default is uvloop's).
    loop = "uvloop" if ingest == "batches" else "asyncio"
    env = worker_env(
        endpoints,
        test_token,
        tmp_path,
        ENGAGEMENT_INGEST=ingest,
        ENGAGEMENT_FETCH_MAX_WAIT_MS="70",
        ENGAGEMENT_FETCH_MIN_BYTES="2",
        ENGAGEMENT_EVENT_LOOP=loop,
    )
    s = settings_of(env)
    alice, bob = "alice", "bob"
    records = [
        (s.topic_clickstream, alice, event("a1", alice, 0, "page_view", page="/"), None),
        (s.topic_clickstream, alice, b"{oops", None),
        (s.topic_feedback, alice,
         b'{"event_id":"n1","customer_id":"alice","occurred_at":"2026-01-01T10:00:00",'
         b'"type":"nps","score":2}', None),
        (s.topic_purchases, bob,
         event("p1", bob, 0.5, "order", order_id="o1", amount="-5", currency="EUR"), None),
        (s.topic_purchases, bob,
         event("p2", bob, 0.5, "gift", order_id="o2", amount="5", currency="EUR"), None),
        (s.topic_feedback, alice, event("f1", alice, 0.6, "nps", score=2), None),
        (s.topic_clickstream, bob, event("b1", bob, 0.7, "hologram_view"), None),
    ]  # fmt: skip
    with running_workers(env, 1, tmp_path) as (worker,):
        await produce(s.kafka_bootstrap, records)
        alerts = await consume_until(
            s.kafka_bootstrap, [s.topic_interventions], lambda seen: len(seen) >= 1
        )
        dead = await consume_until(
            s.kafka_bootstrap, [s.topic_deadletter], lambda seen: len(seen) >= 4
        )
        wait_for(lambda: worker.metric("engagement_deadletter_total") == 4, 30, "metric", worker)
        assert worker.metric("engagement_ingest_path", path=ingest) == 1
        core = "compiled" if COMPILED else "pure"
        assert worker.metric("engagement_build_info", scoring_core=core, ingest=ingest) == 1
        log = worker.log.read_text(errors="replace")
        assert (
            "fetches wait at most 70 ms for 2 bytes (10 ms while records keep coming), "
            "in incremental sessions"
        ) in log
        assert f"running on {loop}" in log
        # printed whatever the log level: the line someone starting a worker looks for
        assert (
            f"engagement worker ready: owns shards {', '.join(map(str, range(s.partitions)))} "
            f"of {s.partitions}; http://127.0.0.1:{worker.port}/healthz"
        ) in log
        assert f"; scoring core compiled ({len(COMPILED)} modules)" in log

    intervention = orjson.loads(alerts[0].value)
    assert intervention["kind"] == "detractor_feedback"
    assert intervention["customer_id"] == alice
    assert intervention["trigger_event_id"] == "f1"
    assert intervention["recommended_action"]

    by_value = {r.value: dict(r.headers) for r in dead}
    assert set(by_value) == {records[i][2] for i in (1, 2, 3, 4)}  # values unchanged
    errors = {v: h["error"].decode() for v, h in by_value.items()}
    assert "Invalid JSON" in errors[records[1][2]]
    assert "occurred_at" in errors[records[2][2]] and "timezone" in errors[records[2][2]]
    assert errors[records[3][2]].startswith("amount:")
    assert errors[records[4][2]].startswith("type:")
    for value, headers in by_value.items():
        source = next(r for r in records if r[2] == value)[0]
        assert headers["source_topic"].decode() == source
        assert int(headers["source_offset"].decode()) >= 0
        assert int(headers["source_partition"].decode()) in range(PARTITIONS)

    client = aioredis.from_url(endpoints.redis_url)
    try:
        store = StateStore(client, s.namespace)
        bob_state = await store.customer(shard_of(bob, PARTITIONS), bob)
        alice_state = await store.customer(shard_of(alice, PARTITIONS), alice)
    finally:
        await client.aclose()
    assert bob_state is not None and bob_state.count("events") == 1  # unknown type is scored
    assert alice_state is not None and alice_state.count("events") == 2


async def test_a_silent_customer_crosses_the_churn_threshold_without_any_event(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    env = worker_env(endpoints, test_token, tmp_path)
    s = settings_of(env)
    fading = _customer_on_shard(1, "fading")
    steady = _customer_on_shard(1, "steady")  # same shard: its events move the clock
    records: list[tuple[str, str | bytes | None, bytes, int | None]] = []
    for day in range(90):
        if day < 20:
            records.append((s.topic_clickstream, fading,
                            event(f"f{day}", fading, day, "page_view"), None))  # fmt: skip
        records.append((s.topic_clickstream, steady,
                        event(f"s{day}", steady, day + 0.5, "page_view"), None))  # fmt: skip
    with running_workers(env, 1, tmp_path):
        await produce(s.kafka_bootstrap, records)
        seen = await consume_until(
            s.kafka_bootstrap, [s.topic_churn_risk], lambda seen: len(seen) >= 2
        )
    alerts = [orjson.loads(r.value) for r in seen]
    assert [a["customer_id"] for a in alerts] == [fading, fading]
    assert [a["level"] for a in alerts] == ["elevated", "high"]
    assert all(a["trigger"] == {"source": "inactivity", "event_id": None} for a in alerts)
    assert alerts[1]["previous_churn_risk"] == alerts[0]["churn_risk"]
    # The silence began after day 19; the alerts are dated in event time, weeks later.
    assert alerts[0]["occurred_at"] > "2026-01-30" and alerts[1]["occurred_at"] < "2026-04-01"
    assert {r["factor"] for r in alerts[0]["reasons"]} >= {"recency", "momentum"}


async def test_events_on_the_wrong_partition_are_rerouted_to_their_owner(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    env = worker_env(endpoints, test_token, tmp_path)
    s = settings_of(env)
    dave = "dave"
    owner = shard_of(dave, PARTITIONS)
    wrong = [(p + 1) % PARTITIONS for p in range(owner, owner + 6)]
    records: list[tuple[str, str | bytes | None, bytes, int | None]] = [
        (s.topic_clickstream, f"k{i}", event(f"d{i}", dave, i, "page_view"), wrong[i])
        for i in range(6)
    ]
    records.append((s.topic_clickstream, dave, event("d6", dave, 6, "page_view"), owner))
    with running_workers(env, 1, tmp_path) as (worker,):
        await produce(s.kafka_bootstrap, records)
        client = aioredis.from_url(endpoints.redis_url)
        store = StateStore(client, s.namespace)
        try:

            async def all_counted() -> bool:
                state = await store.customer(owner, dave)
                return state is not None and state.count("events") == 7

            await poll(all_counted, 30, "dave's 7 events in his state")
        finally:
            await client.aclose()
        rerouted = worker.metric("engagement_events_total", outcome="rerouted")
        assert rerouted == sum(1 for w in wrong if w != owner)


async def test_an_alert_left_in_the_outbox_by_a_dead_worker_is_published_with_its_id(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    """A worker that dies after committing state and before publishing leaves the alert in
    the outbox; the next worker owning the shard publishes it, with the same alert_id."""
    env = worker_env(endpoints, test_token, tmp_path)
    s = settings_of(env)
    erin = "erin"
    shard = shard_of(erin, PARTITIONS)
    client = aioredis.from_url(endpoints.redis_url)
    try:
        scorer = Scorer(
            StateStore(client, s.namespace),
            Decoder(*s.input_topics, rerouted=s.topic_rerouted),
            set(s.input_topics),
            load_config(None),
            AlertTopics(s.topic_churn_risk, s.topic_interventions),
            shards=PARTITIONS,
            clock="event",
            wall=time.time,
        )
        record = Record(s.topic_feedback, shard, 0, erin.encode(),
                        event("e1", erin, 0, "nps", score=1), {})  # fmt: skip
        outcome = await scorer.process([record])  # state and outbox written; never published
    finally:
        await client.aclose()
    (written,) = outcome.alerts
    expected_id = orjson.loads(written.value)["alert_id"]

    with running_workers(env, 1, tmp_path) as (worker,):
        seen = await consume_until(
            s.kafka_bootstrap, [s.topic_interventions], lambda seen: len(seen) >= 1
        )
        wait_for(lambda: worker.metric("engagement_outbox_relayed_total") >= 1, 30, "relay")
    alert = orjson.loads(seen[0].value)
    assert alert["alert_id"] == expected_id
    assert alert["kind"] == "detractor_feedback" and alert["trigger_event_id"] == "e1"


async def test_two_workers_split_the_partitions_and_emit_the_same_alerts_as_one(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = generate(40, 45, 5, start)
    alert_ids: list[dict[str, Any]] = []
    for count in (1, 2):
        token = f"{test_token}w{count}"
        env = worker_env(endpoints, token, tmp_path / token)
        (tmp_path / token).mkdir()
        s = settings_of(env)
        # All input is in before the workers start: on the event clock a record appended
        # after its partition was read to the end arrives late (see ARCHITECTURE.md).
        await ensure_topics(s)
        await publish(events, s)
        with running_workers(env, count, tmp_path / token) as workers:

            def scored() -> float:
                return sum(
                    w.metric("engagement_events_total", outcome=o)
                    for w in workers
                    for o in ("applied", "duplicate", "redelivered", "deadletter")
                )

            wait_for(lambda: scored() >= len(events), 120, "all events scored", workers[0])
            ids = await _alert_ids_once_settled(s)
        alert_ids.append(ids)
    one, two = alert_ids
    assert one, "the workload should raise alerts"
    differ = [a for i, a in {**one, **two}.items() if (i in one) != (i in two)]
    assert set(two) == set(one), f"alerts only in one run: {differ}"


async def _alert_ids_once_settled(s: Settings) -> dict[str, Any]:
    """Alert ids on both alert topics once no new one has arrived for a few seconds."""
    last: list[int] = []

    def settled(seen: list[Any]) -> bool:
        last.append(len(seen))
        return len(last) > 15 and len(set(last[-15:])) == 1 and len(seen) > 0

    seen = await consume_until(
        s.kafka_bootstrap, [s.topic_churn_risk, s.topic_interventions], settled, timeout_s=90
    )
    alerts = [orjson.loads(r.value) for r in seen]
    return {a["alert_id"]: a for a in alerts}


async def test_redis_unavailable_worker_waits_commits_nothing_unapplied_and_loses_nothing(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    redis_server = EmbeddedService.start("redis", tmp_path / "redis", detached=False)
    redis_server.wait_ready(30)
    redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
    env = worker_env(
        endpoints, test_token, tmp_path,
        ENGAGEMENT_REDIS_URL=redis_url, ENGAGEMENT_CLOCK="wall",
        ENGAGEMENT_REDIS_TIMEOUT_S="0.5", ENGAGEMENT_REDIS_RETRY_MAX_S="0.5",
    )  # fmt: skip
    s = settings_of(env)
    frank = "frank"
    shard = shard_of(frank, PARTITIONS)
    tp = TopicPartition(s.topic_clickstream, shard)

    def batch(first: int, count: int) -> list[tuple[str, str | bytes | None, bytes, int | None]]:
        return [
            (s.topic_clickstream, frank, event(f"g{i}", frank, i / 24, "page_view"), shard)
            for i in range(first, first + count)
        ]

    client = aioredis.from_url(redis_url)
    store = StateStore(client, s.namespace)

    def has_events(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            state = await store.customer(shard, frank)
            return state is not None and state.count("events") == n

        return check

    try:
        with running_workers(env, 1, tmp_path) as (worker,):
            await produce(s.kafka_bootstrap, batch(0, 20))
            await poll(has_events(20), 30, "the first 20 events applied")
            applied = (await store.metas([shard]))[shard].applied_offset(tp.topic, shard)
            assert applied == 19

            async def committed_all_applied() -> bool:
                return await _committed(s, tp) == applied + 1

            await poll(committed_all_applied, 30, "the group committing what Redis applied")

            os.kill(redis_server.pid, signal.SIGSTOP)  # Redis stops answering
            try:
                await produce(s.kafka_bootstrap, batch(20, 20))
                wait_for(lambda: worker.metric("engagement_redis_retries_total") >= 2, 30,
                         "the worker retrying Redis", worker)  # fmt: skip
                # Several commit intervals pass; the group must not commit unapplied offsets.
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    assert await _committed(s, tp) == applied + 1
                    await asyncio.sleep(0.5)
            finally:
                os.kill(redis_server.pid, signal.SIGCONT)

            await poll(has_events(40), 60, "all 40 events applied once Redis is back")
        state = await store.customer(shard, frank)
        assert state is not None and state.count("events") == 40  # nothing twice, nothing lost
    finally:
        await client.aclose()
        redis_server.stop()


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
