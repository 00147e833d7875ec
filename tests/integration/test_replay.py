"""`engagement replay` against the real broker and Redis: a replay reproduces what a live
worker on the event clock did, a changed config changes the counts the expected way,
nothing is published without --emit, and the live namespace is never overwritten."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from state_checks import differing_fields, read_states
from worker_harness import (
    REPO,
    consume_until,
    poll,
    running_workers,
    settings_of,
    wait_for,
    worker_env,
)

from scoring.config import load_config
from scoring.state import CustomerState
from streams.dev.services import Endpoints
from streams.dev.simulator import generate, publish
from streams.kafka.topics import ensure_topics
from streams.settings import Settings
from streams.state.store import StateStore
from streams.tools.replay import ReplayOptions, ReplayRefused, replay

START = datetime(2026, 1, 1, tzinfo=UTC)
SHARDS = 4  # ENGAGEMENT_PARTITIONS in worker_env


@pytest.fixture
async def client(endpoints: Endpoints) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(endpoints.redis_url)
    yield c
    await c.aclose()


async def alert_ends(s: Settings) -> dict[TopicPartition, int]:
    """The alert topics' end offsets, as fetch responses give them (Tansu's answer to
    ListOffsets stops at the start of the last record batch)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in (s.topic_churn_risk, s.topic_interventions)
            for p in range(SHARDS)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def all_known() -> bool:
            await consumer.getmany(timeout_ms=100)
            return all(consumer.highwater(tp) is not None for tp in tps)

        await poll(all_known, 30, "high watermarks of the alert topics")
        return {tp: int(consumer.highwater(tp)) for tp in tps}
    finally:
        await consumer.stop()


def differences(a: dict[str, CustomerState], b: dict[str, CustomerState]) -> list[str]:
    """What differs between two namespaces' customers (every field; see differing_fields)."""
    if a.keys() != b.keys():
        return [f"customers only in one: {sorted(a.keys() ^ b.keys())[:5]}"]
    config = load_config(None)
    return [
        f"{customer}: {', '.join(fields)}"
        for customer, x in a.items()
        if (fields := differing_fields(x, b[customer], config))
    ]


async def outbox_sizes(client: aioredis.Redis, namespace: str) -> list[int]:
    return [await client.xlen(f"{namespace}:{{s{s}}}:outbox") for s in range(SHARDS)]


async def live_is_settled(client: aioredis.Redis, namespace: str) -> bool:
    """Every inactivity check due by each shard's latest event time has run, and every
    alert has left the outbox (published)."""
    metas = await StateStore(client, namespace).metas(range(SHARDS))
    for shard, meta in metas.items():
        if not meta.marks:
            return False
        due = await client.zrangebyscore(
            f"{namespace}:{{s{shard}}}:due", "-inf", max(meta.marks.values())
        )
        if due:
            return False
    return sum(await outbox_sizes(client, namespace)) == 0


async def alert_ids_after(s: Settings, before: dict[TopicPartition, int]) -> list[str]:
    """The alert ids published past the ``before`` end offsets."""
    ends = await alert_ends(s)
    topics = [s.topic_churn_risk, s.topic_interventions]
    seen = await consume_until(
        s.kafka_bootstrap, topics, lambda got: len(got) >= sum(ends.values())
    )
    return [
        orjson.loads(r.value)["alert_id"]
        for r in seen
        if before[tp := TopicPartition(r.topic, r.partition)] <= r.offset < ends[tp]
    ]


@pytest.mark.timeout(400)
async def test_a_replay_reproduces_the_live_worker_and_publishes_only_with_emit(
    endpoints: Endpoints, test_token: str, tmp_path: Path, client: aioredis.Redis
) -> None:
    env = worker_env(endpoints, test_token, tmp_path)  # the event clock
    s = settings_of(env)
    events = generate(30, 45, 5, START)
    await ensure_topics(s)  # all input in first: on the event clock, later appends arrive late
    await publish(events, s)
    with running_workers(env, 1, tmp_path) as (worker,):

        def scored() -> bool:
            outcomes = ("applied", "duplicate", "redelivered", "deadletter")
            total = sum(worker.metric("engagement_events_total", outcome=o) for o in outcomes)
            return total >= len(events)

        wait_for(scored, 180, "all events scored", worker)
        await poll(lambda: live_is_settled(client, s.namespace), 60, "the live worker settled")
    live = await read_states(client, s.namespace)
    before = await alert_ends(s)
    published = await alert_ids_after(s, dict.fromkeys(before, 0))

    quiet = await replay(s, ReplayOptions(namespace=f"{test_token}r1"), progress=io.StringIO())
    assert quiet.events == len(events)
    assert quiet.old["churn_risk", "elevated"] > 0, "the workload must raise churn alerts"
    assert sum(quiet.old.values()) == len(set(published))
    assert quiet.new == quiet.old
    assert await alert_ends(s) == before, "nothing is published without --emit"
    assert await outbox_sizes(client, f"{test_token}r1") == [0] * SHARDS
    assert differences(live, await read_states(client, f"{test_token}r1")) == []

    loud = await replay(
        s, ReplayOptions(namespace=f"{test_token}r2", emit=True), progress=io.StringIO()
    )
    assert loud.old == quiet.old and loud.new == quiet.new
    emitted = await alert_ids_after(s, before)
    assert len(emitted) == sum(loud.new.values())
    assert sorted(emitted) == sorted(set(published)), "the same alert ids as the live worker"
    assert await outbox_sizes(client, f"{test_token}r2") == [0] * SHARDS


def engagement(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip


def lower_churn_thresholds(path: Path) -> Path:
    default = (REPO / "scoring" / "default.toml").read_text()
    lowered = default.replace("elevated = 0.5\nhigh = 0.75", "elevated = 0.3\nhigh = 0.45")
    assert lowered != default, "scoring/default.toml no longer has the expected thresholds"
    path.write_text(lowered)
    return path


def churn_and_interventions(rows: Sequence[dict[str, object]]) -> tuple[int, Counter[str]]:
    churn = sum(int(str(r["new"])) for r in rows if r["kind"] == "churn_risk")
    others = Counter({f"{r['kind']}/{r['level']}": int(str(r["new"])) for r in rows})
    for key in [k for k in others if k.startswith("churn_risk/")]:
        del others[key]
    return churn, others


@pytest.mark.timeout(400)
async def test_lower_churn_thresholds_raise_more_churn_alerts_and_the_same_interventions(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    env = worker_env(endpoints, test_token, tmp_path)
    s = settings_of(env)
    await ensure_topics(s)
    events = generate(30, 60, 3, START)
    await publish(events, s)

    runs = []
    for name, extra in (("default", []), ("lower", ["--config", str(
            lower_churn_thresholds(tmp_path / "lower.toml"))])):  # fmt: skip
        done = engagement(env, "replay", "--from-beginning", "--namespace",
                          f"{test_token}{name}", "--json", *extra)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"replay {len(events)}/{len(events)} events" in done.stderr
        report = json.loads(done.stdout)
        assert report["events"]["read"] == len(events) and report["emitted"] is False
        assert all(r["old"] == 0 for r in report["alerts"]), "no worker published anything"
        runs.append(churn_and_interventions(report["alerts"]))
    (churn_default, others_default), (churn_lower, others_lower) = runs
    assert churn_default > 0
    assert churn_lower > churn_default
    assert others_lower == others_default and sum(others_default.values()) > 0


async def test_a_replay_into_the_live_or_a_used_namespace_is_refused(
    endpoints: Endpoints, test_token: str, tmp_path: Path, client: aioredis.Redis
) -> None:
    env = worker_env(endpoints, test_token, tmp_path)
    s = settings_of(env)
    await ensure_topics(s)
    ghost = f"{test_token}used:{{s1}}:c:ghost"
    await client.set(ghost, b"{}")

    with pytest.raises(ReplayRefused, match=r"--namespace .*live namespace"):
        await replay(s, ReplayOptions(namespace=s.namespace, force=True))
    with pytest.raises(ReplayRefused, match=r"--namespace .*already holds state"):
        await replay(s, ReplayOptions(namespace=f"{test_token}used"))
    with pytest.raises(ReplayRefused, match="--namespace 'bad name'"):
        await replay(s, ReplayOptions(namespace="bad name"))
    with pytest.raises(ReplayRefused, match=r"--config .*no such file"):
        await replay(s, ReplayOptions(namespace=f"{test_token}n", config=tmp_path / "none"))
    bad_params = tmp_path / "params.json"
    bad_params.write_text('{"bgnbd": {"r": -1, "alpha": 1, "a": 1, "b": 1}}')
    with pytest.raises(ReplayRefused, match=r"--model-params: .*bgnbd\.r"):
        await replay(s, ReplayOptions(namespace=f"{test_token}n", model_params=bad_params))
    assert await client.get(ghost) == b"{}", "a refused replay changes nothing"

    forced = await replay(
        s, ReplayOptions(namespace=f"{test_token}used", force=True), progress=io.StringIO()
    )
    assert forced.events == 0 and await client.get(ghost) is None

    done = engagement(env, "replay", "--from-beginning", "--namespace", s.namespace)
    assert done.returncode == 2 and "replay refused: --namespace" in done.stderr
    done = engagement(env, "replay", "--namespace", f"{test_token}x")
    assert done.returncode == 2 and "--from-beginning" in done.stderr


async def test_records_on_a_topic_with_another_partition_count_are_rerouted_locally(
    endpoints: Endpoints, test_token: str, tmp_path: Path, client: aioredis.Redis
) -> None:
    env = worker_env(endpoints, test_token, tmp_path)
    s = settings_of(env)
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(s.topic_clickstream, 3, 1)])
    finally:
        await admin.close()
    await ensure_topics(s)  # the others, with ENGAGEMENT_PARTITIONS
    events = generate(12, 30, 8, START)
    await publish(events, s)

    result = await replay(s, ReplayOptions(namespace=f"{test_token}r"), progress=io.StringIO())
    clicks = sum(1 for e in events if e.source == "clickstream")
    assert result.rerouted == clicks > 0
    assert result.applied + result.duplicates == result.events == len(events)
    replayed = await read_states(client, f"{test_token}r")
    event_ids: dict[str, set[object]] = {}
    for e in events:
        event_ids.setdefault(e.customer_id, set()).add(e.payload["event_id"])
    assert {c: st.count("events") for c, st in replayed.items()} == {
        c: len(ids) for c, ids in event_ids.items()
    }, "every event applied once, the rerouted ones included"
    meta = await StateStore(client, f"{test_token}r").metas(range(SHARDS))
    fields = {f for m in meta.values() for f in m.offsets}
    assert not any(f.startswith(f"o:{s.topic_rerouted}:") for f in fields), (
        "applied offsets under the live rerouted topic would make a worker skip its records"
    )


@pytest.mark.timeout(300)
async def test_a_worker_switched_to_the_replayed_namespace_carries_on_from_it(
    endpoints: Endpoints, test_token: str, tmp_path: Path, client: aioredis.Redis
) -> None:
    env = worker_env(endpoints, test_token, tmp_path)
    s = settings_of(env)
    await ensure_topics(s)
    events = generate(12, 40, 9, START)
    before, after = events[: len(events) // 2], events[len(events) // 2 :]
    await publish(before, s)
    replayed = f"{test_token}v2"
    await replay(s, ReplayOptions(namespace=replayed), progress=io.StringIO())
    # Switched as the README says: the namespace, and a consumer group new to the topics
    # (no worker ran under this app id yet).
    with running_workers({**env, "ENGAGEMENT_NAMESPACE": replayed}, 1, tmp_path) as (worker,):
        await publish(after, s)

        def caught_up() -> bool:
            redelivered = worker.metric("engagement_events_total", outcome="redelivered")
            applied = worker.metric("engagement_events_total", outcome="applied")
            duplicate = worker.metric("engagement_events_total", outcome="duplicate")
            return redelivered >= len(before) and applied + duplicate >= len(after)

        try:
            wait_for(caught_up, 120, "the worker skipped the replayed, scored the new", worker)
        except AssertionError as exc:
            outcomes = {o: worker.metric("engagement_events_total", outcome=o)
                        for o in ("applied", "duplicate", "redelivered", "deadletter")}  # fmt: skip
            raise AssertionError(f"{exc}\n{outcomes} of {len(before)} + {len(after)}") from None
        assert worker.metric("engagement_events_total", outcome="redelivered") == len(before)
    event_ids: dict[str, set[object]] = {}
    for e in events:
        event_ids.setdefault(e.customer_id, set()).add(e.payload["event_id"])
    assert {c: st.count("events") for c, st in (await read_states(client, replayed)).items()} == {
        c: len(ids) for c, ids in event_ids.items()
    }
