"""kill -9 of a worker between the commits of two shards of one batch.

Where a batch spanning shards is committed by one script call per shard, pipelined (on a
Redis Cluster, or with ENGAGEMENT_REDIS_PER_SHARD_CALLS behind a proxy; a standalone Redis
gets one call for the whole batch), a crash can leave one shard's part applied and the
other's not. A proxy in front of Redis
(resp_proxy.py) lets the first shard's commit of such a pipeline through and holds the
second, and the worker is killed there. The next worker, straight on Redis, must finish the
batch: every customer ends as the offline truth says (each event counted once), and every
alert of the truth reaches the alert topics (re-sent only as identical copies).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from resp_proxy import Command, running_proxy
from state_checks import differing_fields, read_states
from worker_harness import produce, running_workers, settings_of, worker_env

from schemas.events import InputEvent
from scoring.config import ScoringConfig, load_config
from scoring.engine import Alert, apply_event, evaluate_due
from scoring.state import CustomerState
from streams.dev.services import Endpoints
from streams.dev.simulator import generate, topic_for
from streams.kafka.topics import ensure_topics
from streams.pipeline.intake import Decoder, Record, shard_of
from streams.settings import Settings
from streams.state.store import StateStore

PARTITIONS = 4
START = datetime(2026, 3, 2, tzinfo=UTC)
# Small batches, so the crash lands mid-stream: from the third batch spanning shards on.
BATCH_MAX_EVENTS = 100
FIRST_CUT_SPANNING_BATCH = 3
# Faust commits acknowledged offsets every 2.8 s: watch the group for longer than that (and
# less than the worker's Redis timeout, 5 s, though what it retries would be held too).
ACK_WATCH_S = 4.0
Outgoing = tuple[str, str | bytes | None, bytes, int | None]
COMMIT_SCRIPT = resources.files("streams.state").joinpath("commit_shard.lua").read_text("utf-8")


def _workload(s: Settings) -> list[Outgoing]:
    """Simulated customers, plus a detractor NPS from each every 5 days (so most batches
    write alerts into their shards' outboxes), in time order, no customer with two events
    at one millisecond (the worker breaks such ties by read order); then one customer per
    shard 45 days after everyone else, which moves every shard's event clock past a long
    silence."""
    raw = [(topic_for(e, s), e.occurred_at, e.payload) for e in generate(24, 60, 11, START)]
    for i, who in enumerate(sorted({str(payload["customer_id"]) for _, _, payload in raw})):
        for k in range(12):
            body = {"event_id": f"{who}-nps-{k}", "customer_id": who, "type": "nps", "score": 1}
            raw.append((s.topic_feedback, START + timedelta(days=5 * k + 2, hours=i), body))
    raw.sort(key=lambda r: r[1])
    out: list[Outgoing] = []
    last: dict[str, datetime] = {}
    for topic, occurred_at, payload in raw:
        who = str(payload["customer_id"])
        at = max(occurred_at, last.get(who, START) + timedelta(milliseconds=1))
        last[who] = at
        value = orjson.dumps(payload | {"occurred_at": at.isoformat("T", "milliseconds")})
        out.append((topic, who, value, None))
    late = max(last.values()) + timedelta(days=45)
    for shard in range(PARTITIONS):
        who = next(c for i in range(99) if shard_of(c := f"late{shard}-{i}", PARTITIONS) == shard)
        stamp = (late + timedelta(seconds=shard)).isoformat("T", "milliseconds")
        body = {"event_id": f"{who}-1", "customer_id": who, "occurred_at": stamp}
        out.append((s.topic_clickstream, who, orjson.dumps(body | {"type": "page_view"}), None))
    return out


def _truth(
    messages: Sequence[Outgoing], s: Settings, config: ScoringConfig
) -> tuple[dict[str, CustomerState], dict[str, Alert]]:
    """Each customer's events folded in time order on the event clock, then the inactivity
    checks due by the shard's last event time (where a worker stops once all is read)."""
    decoder = Decoder(s.topic_clickstream, s.topic_purchases, s.topic_feedback)
    by_customer: dict[str, list[InputEvent]] = defaultdict(list)
    shard_end: dict[int, float] = {}
    for topic, _, value, _ in messages:
        event = decoder.decode(Record(topic, 0, 0, None, value, {}))
        by_customer[event.customer_id].append(event)
        shard = shard_of(event.customer_id, PARTITIONS)
        shard_end[shard] = max(shard_end.get(shard, 0.0), event.occurred_at.timestamp())
    states: dict[str, CustomerState] = {}
    alerts: dict[str, Alert] = {}
    for customer, events in by_customer.items():
        state: CustomerState | None = None
        for event in sorted(events, key=lambda e: e.occurred_at):
            t = event.occurred_at.timestamp()
            outcome = apply_event(state, event, t, t, config)
            state = outcome.state
            alerts.update((a.alert_id, a) for a in outcome.alerts)
        assert state is not None
        end = shard_end[shard_of(customer, PARTITIONS)]
        due = evaluate_due(state, end, end, config)
        alerts.update((a.alert_id, a) for a in due.alerts)
        states[customer] = due.state
    return states, alerts


def _through_proxy(redis_url: str, port: int) -> str:
    """``redis_url`` with its host and port replaced by the proxy's (credentials, db kept)."""
    parts = urlsplit(redis_url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{port}"))


def _offsets(commit: Command, field_prefix: bytes) -> dict[bytes, int]:
    """The applied offsets a commit_shard.lua call writes: its (o:<topic>:<p>, offset) pairs."""
    args = commit[3 + int(commit[2]) :]
    return {f: int(args[i + 1]) for i, f in enumerate(args[:-1]) if f.startswith(field_prefix)}


class CutSpanningBatch:
    """Holds the second shard commit of a pipeline of batch commits (scripts that write
    applied offsets; the sweeper's do not) spanning two shards or more: the ``nth`` such
    pipeline or the first after it whose first commit writes alerts into its outbox.
    Counting starts once ``armed``: until the harness has seen the worker own its shards
    (its /healthz pings Redis, and holding stops every client's traffic)."""

    def __init__(self, field_prefix: bytes, alert_topics: Sequence[str], nth: int) -> None:
        self.field_prefix, self.nth, self.spanning = field_prefix, nth, 0
        self.armed = False
        self.alert_topics = {t.encode() for t in alert_topics}

    def is_batch_commit(self, command: Command) -> bool:
        return command[0].upper() == b"EVALSHA" and bool(_offsets(command, self.field_prefix))

    def __call__(self, command: Command, pipelined_behind: Sequence[Command]) -> bool:
        if not self.armed or not self.is_batch_commit(command):
            return False
        earlier = [c for c in pipelined_behind if self.is_batch_commit(c)]
        if len(earlier) != 1:
            return False  # not pipelined, or a third shard of a pipeline already counted
        self.spanning += 1
        # Outbox entries are (topic, key, value) arguments: an alert topic's name is one.
        return self.spanning >= self.nth and not self.alert_topics.isdisjoint(earlier[0])


def _alert_ids_written(commit: Command, alert_topics: set[bytes]) -> list[str]:
    """Ids of the alerts a commit_shard.lua call appends to its outbox: the values of its
    (topic, key, value) arguments whose topic is an alert topic."""
    args = commit[3 + int(commit[2]) :]
    return [
        str(orjson.loads(args[i + 2])["alert_id"])
        for i, a in enumerate(args[:-2])
        if a in alert_topics
    ]


async def _alert_ids_in(client: aioredis.Redis, outbox_key: bytes) -> set[str]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(outbox_key))
    return {str(orjson.loads(fields[b"v"])["alert_id"]) for _, fields in entries}


def _shard_meta_key(commit: Command) -> bytes:
    # KEYS[1] of commit_shard.lua (then due, outbox, kpi, customers).
    assert re.fullmatch(rb".*:\{s\d+\}:meta", commit[3]), commit[3]
    return commit[3]


async def _assert_half_applied(
    client: aioredis.Redis, applied: Command, held: Command, field_prefix: bytes
) -> None:
    """Redis holds the applied shard's commit (its epoch bumped once, its offsets written)
    and nothing of the held one (its epoch as the batch read it, its offsets below)."""
    for commit, ran in ((applied, True), (held, False)):
        meta = await client.hgetall(_shard_meta_key(commit))
        # ARGV: 1 part, its key and argument counts, then the epoch the batch read
        read_epoch = int(commit[3 + int(commit[2]) + 3])
        assert int(meta.get(b"epoch", b"0")) == read_epoch + (1 if ran else 0), (commit[3], ran)
        for name, offset in _offsets(commit, field_prefix).items():
            stored = int(meta.get(name, b"-1"))
            assert stored == offset if ran else stored < offset, (name, stored, offset, ran)


async def _acked_past_redis(s: Settings, store: StateStore, group: AIOKafkaConsumer) -> list[str]:
    """Input partitions whose group-committed offset is past what Redis has applied (with
    no dead letter or reroute in the input, nothing else lets the group commit past it)."""
    views = await store.metas(list(range(PARTITIONS)))
    ahead = []
    for topic in s.input_topics:
        for p in range(PARTITIONS):
            committed = await group.committed(TopicPartition(topic, p))
            applied = views[p].applied_offset(topic, p)
            if committed is not None and committed > applied + 1:
                ahead.append(f"{topic}:{p} committed {committed}, Redis applied {applied}")
    return ahead


def _state_differences(
    got: dict[str, CustomerState], truth: dict[str, CustomerState], config: ScoringConfig
) -> list[str]:
    out = [f"{c}: not in the truth" for c in got.keys() - truth.keys()]
    for customer, want in truth.items():
        have = got.get(customer)
        if have is None:
            out.append(f"{customer}: no state")
            continue
        if have.count("events") != want.count("events"):
            out.append(
                f"{customer}: {have.count('events')} events counted, not {want.count('events')}"
            )
        if fields := differing_fields(have, want, config):
            out.append(f"{customer}: {','.join(fields)} differ")
    return out


def _alert_differences(
    received: Sequence[ConsumerRecord[bytes, bytes]], truth: dict[str, Alert]
) -> list[str]:
    copies: dict[str, list[bytes]] = defaultdict(list)
    for r in received:
        copies[orjson.loads(r.value)["alert_id"]].append(r.value)
    out = [f"alert {i} of the truth not published" for i in sorted(truth.keys() - copies.keys())]
    out += [f"alert {i} not in the truth" for i in sorted(copies.keys() - truth.keys())]
    out += [
        f"alert {i} sent {len(v)} times, not all alike"
        for i, v in copies.items()
        if len(set(v)) > 1
    ]
    for alert_id, values in copies.items():
        want, got = truth.get(alert_id), orjson.loads(values[0])
        if want is not None:
            expected = orjson.loads(want.model_dump_json())
            keys = ("customer_id", "kind", "level", "severity", "trigger")
            if [got.get(k) for k in keys] != [expected.get(k) for k in keys]:
                out.append(f"alert {alert_id}: {got} is not {expected}")
    return out


@pytest.mark.timeout(120)
async def test_a_worker_killed_between_two_shard_commits_of_a_batch_loses_and_doubles_nothing(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    config = load_config(None)
    env = worker_env(
        endpoints,
        test_token,
        tmp_path,
        ENGAGEMENT_BATCH_MAX_EVENTS=str(BATCH_MAX_EVENTS),
        ENGAGEMENT_REDIS_PER_SHARD_CALLS="true",
    )
    s = settings_of(env)
    messages = _workload(s)
    truth_states, truth_alerts = _truth(messages, s, config)
    assert truth_alerts, "the workload should raise alerts"
    assert len({shard_of(c, PARTITIONS) for c in truth_states}) == PARTITIONS

    client = aioredis.from_url(endpoints.redis_url)
    store = StateStore(client, s.namespace)
    group = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap, group_id=s.app_id, enable_auto_commit=False
    )
    alert_reader = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False)
    try:
        # Loaded already, as by any earlier worker: a NOSCRIPT reply would make the cut
        # commit a no-op (the worker loads the script and sends the calls again).
        await client.script_load(COMMIT_SCRIPT)
        # All input is in before the worker starts: on the event clock a record appended
        # after its partition was read to the end arrives late (see ARCHITECTURE.md). Topics
        # first: a broker's auto-created topic has its own partition count, and a record on
        # an input topic of another count is rerouted (this test wants every record applied).
        await ensure_topics(s)
        await produce(s.kafka_bootstrap, messages)
        await group.start()
        written = await _kill_between_shard_commits(env, endpoints, client, store, group, tmp_path)

        await alert_reader.start()
        alert_topics = (s.topic_churn_risk, s.topic_interventions)
        alert_reader.assign([TopicPartition(t, p) for t in alert_topics for p in range(PARTITIONS)])
        await alert_reader.seek_to_beginning()
        received: list[ConsumerRecord[bytes, bytes]] = []
        (tmp_path / "next").mkdir()
        with running_workers(env, 1, tmp_path / "next") as (worker,):  # straight on Redis
            deadline = time.monotonic() + 60
            while True:
                for records in (await alert_reader.getmany(timeout_ms=300)).values():
                    received.extend(records)
                got = await read_states(client, s.namespace)
                problems = _state_differences(got, truth_states, config)
                problems += _alert_differences(received, truth_alerts)
                for shard in range(PARTITIONS):
                    if unsent := await client.xlen(store.keys(shard).outbox):
                        problems.append(f"{unsent} alerts left in shard {shard}'s outbox")
                if not problems or time.monotonic() > deadline:
                    break
                assert worker.process.poll() is None, worker.log_tail()
        assert not problems, f"{len(problems)} differences from the truth, e.g. {problems[:5]}"
        assert sum(st.count("events") for st in got.values()) == len(messages)
        assert set(written) <= {orjson.loads(r.value)["alert_id"] for r in received}
        assert not await _acked_past_redis(s, store, group)
    finally:
        await alert_reader.stop()
        await group.stop()
        await client.aclose()


async def _kill_between_shard_commits(
    env: dict[str, str],
    endpoints: Endpoints,
    client: aioredis.Redis,
    store: StateStore,
    group: AIOKafkaConsumer,
    tmp_path: Path,
) -> list[str]:
    """Run a worker through the proxy until it has sent a batch's first shard commit and
    the proxy holds the second, check Redis and the group there, kill -9 the worker; the
    ids of the alerts the applied shard commit put in its outbox."""
    s = settings_of(env)
    field_prefix = f"o:{s.namespace}.".encode()
    assert all(t.startswith(f"{s.namespace}.") for t in s.input_topics)
    rule = CutSpanningBatch(
        field_prefix, (s.topic_churn_risk, s.topic_interventions), FIRST_CUT_SPANNING_BATCH
    )
    cut: list[tuple[Command, Sequence[Command]]] = []
    tripped = threading.Event()

    def on_hold(command: Command, pipelined_behind: Sequence[Command]) -> None:
        cut.append((command, pipelined_behind))
        tripped.set()

    redis = urlsplit(endpoints.redis_url)
    assert redis.hostname is not None and redis.port is not None, endpoints.redis_url
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    with running_proxy(redis.hostname, redis.port, rule, on_hold) as proxy:
        killed_env = {
            **env,
            "ENGAGEMENT_REDIS_URL": _through_proxy(endpoints.redis_url, proxy.port),
            "ENGAGEMENT_STATE_DIR": str(killed_dir),
        }
        with running_workers(killed_env, 1, killed_dir) as (worker,):
            rule.armed = True
            deadline = time.monotonic() + 40
            while not tripped.is_set():
                assert worker.process.poll() is None, worker.log_tail()
                assert time.monotonic() < deadline, f"no batch cut:\n{worker.log_tail()}"
                await asyncio.sleep(0.05)
            held, behind = cut[0]
            (applied,) = [c for c in behind if rule.is_batch_commit(c)]
            await _assert_half_applied(client, applied, held, field_prefix)
            # The applied half wrote alerts: only the next owner's outbox relay can send them.
            written = _alert_ids_written(applied, rule.alert_topics)
            assert written and set(written) <= await _alert_ids_in(client, applied[5])
            # Frozen there, the worker must not let the group commit the held shard's
            # records (or any other) past what Redis applied: watch a commit interval.
            watch_until = time.monotonic() + ACK_WATCH_S
            while time.monotonic() < watch_until:
                assert not await _acked_past_redis(s, store, group)
                await asyncio.sleep(0.5)
            await _assert_half_applied(client, applied, held, field_prefix)
            os.kill(worker.process.pid, signal.SIGKILL)
            worker.process.wait(timeout=10)
        assert not proxy.failures, proxy.failures
    await _assert_half_applied(client, applied, held, field_prefix)  # nothing landed late
    return written
