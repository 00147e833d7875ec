"""One chaos run: publish the workload, start workers, inject faults while they score it,
let them finish, then check the invariants (tests/chaos/invariants.py).

Faults are triggered at points of progress (the share of input records Redis has applied
or recorded done), not at fixed times, so they land mid-work on a fast or a slow machine;
within that, kill moments are random.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
import redis.exceptions
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from alert_readers import AlertReaderFigures, AlertReaders
from fleet import Fleet
from invariants import (
    Findings,
    check_alerts,
    check_dead_letters,
    check_states,
    offsets_ahead,
    read_topics,
)
from services import Broker, RedisServer
from state_checks import read_states
from worker_harness import settings_of, worker_env
from workload import Message, Truth, Workload

from scoring.config import ScoringConfig
from streams.dev.services import Endpoints
from streams.pipeline.intake import shard_of
from streams.state.positions import done_field, meta_shard
from streams.state.store import ShardKeys, offset_field

TP = tuple[str, int]
# Every record applied and the states no longer changing for this long: stop waiting.
QUIET_S = 30.0


@dataclass(frozen=True)
class Scale:
    name: str
    customers: int
    days: float
    poison: int
    partitions: int
    kills: int
    redis_down_s: float
    settle_timeout_s: float
    real_services: bool
    # Smaller batches make the reduced run last long enough for its faults to land mid-work.
    batch_max_events: int = 1000


# CHAOS_SERVICES=embedded runs the full scale on the embedded pair (no broker restart).
REAL = os.environ.get("CHAOS_SERVICES", "real") != "embedded"
REDUCED = Scale("reduced", 250, 20, 1000, 4, 2, 5, 150, False, batch_max_events=40)
FULL = Scale("full", 2000, 20, 5000, 8, 6, 30, 900, REAL)


@dataclass
class Report:
    scenario: str
    events: int = 0
    poison: int = 0
    faults: list[str] = field(default_factory=list)
    recoveries_s: list[float] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)
    kills_with_work_in_flight: int = 0
    findings: Findings = field(default_factory=Findings)
    took_s: float = 0.0
    # From the first worker's start until Redis had applied (or recorded done) every input.
    applied_all_s: float = 0.0
    alert_readers: AlertReaderFigures | None = None
    max_rss_mib: float = 0.0
    rss_samples: list[tuple[float, float]] = field(default_factory=list)


class Run:
    def __init__(
        self,
        scale: Scale,
        redis: RedisServer,
        broker: Broker,
        workload: Workload,
        truth: Truth,
        config: ScoringConfig,
        workdir: Path,
        name: str,
    ) -> None:
        self.scale, self.redis, self.broker = scale, redis, broker
        self.workload, self.truth, self.config = workload, truth, config
        self.workdir = workdir
        token = f"chaos{uuid.uuid4().hex[:8]}"
        self.env = worker_env(
            Endpoints(broker.bootstrap, redis.url), token, workdir,
            ENGAGEMENT_PARTITIONS=str(scale.partitions),
            ENGAGEMENT_REDIS_TIMEOUT_S="1", ENGAGEMENT_REDIS_RETRY_MAX_S="1",
            ENGAGEMENT_BATCH_MAX_EVENTS=str(scale.batch_max_events),
            ENGAGEMENT_PRODUCER_IDEMPOTENCE="true" if broker.apache else "false",
        )  # fmt: skip
        self.settings = s = settings_of(self.env)
        self.topic_of = {
            "clickstream": s.topic_clickstream,
            "purchases": s.topic_purchases,
            "feedback": s.topic_feedback,
        }
        self.fleet = Fleet(self.env, workdir)
        self.report = Report(name, len(workload.valid), len(workload.poison))
        self.client = aioredis.from_url(redis.url, socket_timeout=2)
        self.poison_at: dict[TP, set[int]] = {}
        self.total = len(workload.valid) + len(workload.poison)
        self.loss_window = False
        # When Redis came back from the last rollback: only a sample begun after it can
        # tell that the workers have caught up (one in flight across it saw the old Redis).
        self.rolled_back_at = 0.0
        self.rollbacks = 0
        self.rng = random.Random(7)
        self.started = self.scoring_started = time.monotonic()
        self.alert_readers: AlertReaders | None = None

    @property
    def input_tps(self) -> list[TP]:
        return [(t, p) for t in self.topic_of.values() for p in range(self.scale.partitions)]

    # -- setup and the workload ---------------------------------------------------------

    async def create_topics(self) -> None:
        s = self.settings
        names = [*self.topic_of.values(), s.topic_rerouted, s.topic_churn_risk]
        names += [s.topic_interventions, s.topic_deadletter]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(n, self.scale.partitions, 1) for n in names], timeout_ms=30_000
            )
        finally:
            await admin.close()

    async def publish(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.broker.bootstrap, acks="all", linger_ms=5,
            enable_idempotence=self.broker.apache, request_timeout_ms=120_000,
        )  # fmt: skip
        await producer.start()
        messages = self.workload.interleaved(seed=3)
        chunk = 1000
        try:
            for i in range(0, len(messages), chunk):
                sent = []
                for m in messages[i : i + chunk]:
                    sent.append((m, await producer.send(**self._record(m))))
                for m, future in sent:
                    meta = await future
                    if m.key.startswith(b"poison-"):
                        self.poison_at.setdefault((meta.topic, meta.partition), set()).add(
                            meta.offset
                        )
        finally:
            await producer.stop()

    def _record(self, m: Message) -> dict[str, object]:
        topic = self.topic_of[m.source]
        if m.key.startswith(b"poison-"):
            partition = self.rng.randrange(self.scale.partitions)
        else:
            partition = shard_of(m.key.decode(), self.scale.partitions)
        return {"topic": topic, "key": m.key, "value": m.value, "partition": partition}

    # -- observing ----------------------------------------------------------------------

    async def frontier(self) -> dict[TP, int]:
        """Per input partition: the highest offset Redis has applied or recorded done."""
        shards = sorted({meta_shard(p, self.scale.partitions) for _, p in self.input_tps})
        pipe = self.client.pipeline(transaction=False)
        for shard in shards:
            pipe.hgetall(ShardKeys(self.settings.namespace, shard).meta)
        metas = dict(zip(shards, await pipe.execute(), strict=True))
        out = {}
        for topic, p in self.input_tps:
            meta = metas[meta_shard(p, self.scale.partitions)]
            values = [meta.get(f.encode()) for f in (offset_field(topic, p), done_field(topic, p))]
            out[(topic, p)] = max([int(v) for v in values if v is not None], default=-1)
        return out

    async def progress(self) -> int:
        return sum(o + 1 for o in (await self.frontier()).values())

    async def progress_at_least(self, share: float, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while await self._safe(self.progress, 0) < share * self.total:
            if time.monotonic() > deadline:
                raise AssertionError(f"the workers did not reach {share:.0%} in {timeout_s}s")
            await asyncio.sleep(0.2)

    async def _safe(self, probe: Callable[[], Awaitable[int]], default: int) -> int:
        try:
            return await probe()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            return default

    async def committed(self, consumer: AIOKafkaConsumer) -> dict[TP, int | None]:
        out: dict[TP, int | None] = {}
        for topic, p in self.input_tps:
            offset = await consumer.committed(TopicPartition(topic, p))
            out[(topic, p)] = None if offset is None or offset < 0 else offset
        return out

    async def monitor(self) -> None:
        """Every second: the group's committed offsets must not be ahead of Redis (Kafka
        read first: Redis only moves forward, outside a rollback), and worker memory."""
        consumer = await self._offsets_reader()
        try:
            while True:
                await asyncio.sleep(1.0)
                for size in self.fleet.rss_mib().values():
                    self.report.rss_samples.append((time.monotonic() - self.started, size))
                    self.report.max_rss_mib = max(self.report.max_rss_mib, size)
                sampled_at, rollbacks = time.monotonic(), self.rollbacks
                try:
                    committed = await self.committed(consumer)
                    frontier = await self.frontier()
                except (KafkaError, redis.exceptions.RedisError, OSError):
                    continue  # a fault is in progress
                applied = sum(o + 1 for o in frontier.values())
                if applied >= self.total and not self.report.applied_all_s:
                    self.report.applied_all_s = round(time.monotonic() - self.scoring_started, 1)
                ahead = offsets_ahead(committed, frontier, self.poison_at)
                if rollbacks != self.rollbacks:
                    continue  # a rollback began while sampling: its two reads disagree
                if self.loss_window:
                    # Over once Kafka follows Redis again, seen by a sample begun after
                    # Redis came back (not one that read the Redis of before the rollback)
                    # that read every partition's offset (a broker restarting answers
                    # some offset fetches with none, which would count as not ahead).
                    read_all = all(committed.get(tp) is not None for tp in frontier)
                    if not ahead and read_all and sampled_at > self.rolled_back_at > 0:
                        self.loss_window = False
                else:
                    self.report.findings.offset_violations += ahead
        finally:
            await consumer.stop()

    # -- faults -------------------------------------------------------------------------

    async def start_alert_readers(self, pause_s: float) -> AlertReaders:
        """Slow and stalled consumers of the alert topics, until the run ends."""
        s = self.settings
        self.alert_readers = AlertReaders(
            self.broker.bootstrap, [s.topic_churn_risk, s.topic_interventions],
            self.scale.partitions, s.app_id, pause_s,
        )  # fmt: skip
        await self.alert_readers.start()
        self.report.faults.append(f"alert topics read 1 record/{pause_s:.2f}s; 1 reader stalled")
        return self.alert_readers

    async def recovered(self, since: float) -> None:
        """Record how long after ``since`` the applied state moved on again."""
        before = await self._safe(self.progress, -1)
        while True:
            now = await self._safe(self.progress, -1)
            if (now > before >= 0) or now >= self.total:
                break
            before = now if before < 0 else before
            await asyncio.sleep(0.1)
        self.report.recoveries_s.append(round(time.monotonic() - since, 1))

    async def kill(self) -> None:
        name = self.rng.choice([m.name for m in self.fleet.live()])
        await asyncio.sleep(self.rng.uniform(0, 1.0))  # a random moment
        frontier, committed_view = await self.frontier(), await self._committed_once()
        self.fleet.kill9(name)
        at = time.monotonic()
        # Work in flight: Redis applied records whose offsets Kafka has not committed yet.
        if any((committed_view.get(tp) or 0) <= o for tp, o in frontier.items() if o >= 0):
            self.report.kills_with_work_in_flight += 1
        self.report.faults.append(f"kill -9 {name}")
        await self.recovered(at)

    async def _offsets_reader(self) -> AIOKafkaConsumer:
        """A started consumer that reads the workers' group offsets without joining it."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.broker.bootstrap, group_id=self.settings.app_id,
            enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        return consumer

    async def _committed_once(self) -> dict[TP, int | None]:
        consumer = await self._offsets_reader()
        try:
            return await self.committed(consumer)
        finally:
            await consumer.stop()

    async def join(self, name: str) -> None:
        self.fleet.start(name)
        at = time.monotonic()
        await self.fleet.wait_cover(self.scale.partitions, 120)
        self.report.faults.append(f"{name} joins (rebalance)")
        await self.recovered(at)

    async def leave(self, name: str) -> None:
        await self.fleet.retire(name)
        at = time.monotonic()
        await self.fleet.wait_cover(self.scale.partitions, 120)
        self.report.faults.append(f"{name} leaves (rebalance)")
        await self.recovered(at)

    async def redis_outage(self, down_s: float) -> None:
        await asyncio.to_thread(self.redis.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.redis.start)
        at = time.monotonic()
        self.report.faults.append(f"Redis stopped {down_s:.0f}s")
        await self.recovered(at)

    async def redis_rollback(self) -> None:
        """Redis crashes and comes back with an older append-only file: the writes of its
        last second or so are gone, while Kafka already has offsets committed past them."""
        copy = self.workdir / "aof-copy"
        await asyncio.to_thread(self.redis.snapshot, copy)
        before = await self.progress()
        await self.progress_at_least(min(1.0, (before + 200) / self.total))
        await asyncio.sleep(1.0)
        lost = await self._safe(self.progress, before) - before
        self.loss_window, self.rolled_back_at = True, 0.0
        self.rollbacks += 1
        self.redis.kill()
        await asyncio.to_thread(self.redis.roll_back, copy)
        await asyncio.to_thread(self.redis.start)
        at = self.rolled_back_at = time.monotonic()
        self.report.faults.append(f"Redis rolled back (~{lost} applied records lost)")
        await self.recovered(at)

    async def broker_restart(self, down_s: float) -> None:
        await asyncio.to_thread(self.broker.restart, down_s)
        at = time.monotonic()
        self.report.faults.append(f"Kafka broker restarted ({down_s:.0f}s down)")
        await self.recovered(at)

    # -- the run ------------------------------------------------------------------------

    async def run(self, faults: Callable[[Run], Awaitable[None]]) -> Report:
        await self.create_topics()
        # The whole workload first: on the event clock, a worker tailing input that is
        # still being written can apply an event before an earlier one of another topic
        # (see RELIABILITY.md), and the truth is an offline fold of the whole history.
        await self.publish()
        self.scoring_started = time.monotonic()
        self.fleet.start("w1")
        await self.fleet.wait_cover(self.scale.partitions, 120)
        supervisor = asyncio.create_task(self.fleet.supervise())
        monitor = asyncio.create_task(self.monitor())
        try:
            await faults(self)
            await self.settle()
        finally:
            for task in (supervisor, monitor):
                task.cancel()
            await asyncio.gather(supervisor, monitor, return_exceptions=True)
            if self.alert_readers is not None:
                self.report.alert_readers = await self.alert_readers.stop()
            self.report.exits = list(self.fleet.exits)
            self.report.took_s = round(time.monotonic() - self.started, 1)
            await asyncio.to_thread(self.fleet.stop_all)
        await self.check()
        await self.client.aclose()
        return self.report

    async def settle(self) -> None:
        """Wait until Redis has every input record and the states match the truth (or,
        once every record is applied, until they stop changing for a while)."""
        deadline = time.monotonic() + self.scale.settle_timeout_s
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if await self._safe(self.progress, 0) >= self.total:
                states = await read_states(self.client, self.settings.namespace)
                findings = Findings()
                check_states(findings, states, self.truth.states, self.config)
                if not findings.mismatched and not await self._outbox_pending():
                    return
                if len(findings.mismatched) != last:
                    last, quiet_since = len(findings.mismatched), time.monotonic()
                elif time.monotonic() - quiet_since > QUIET_S:
                    return  # nothing moves any more: check() reports what differs
            await asyncio.sleep(1.0)

    async def _outbox_pending(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for shard in range(self.scale.partitions):
            pipe.xlen(ShardKeys(self.settings.namespace, shard).outbox)
        return sum(await pipe.execute())

    async def check(self) -> None:
        s, findings = self.settings, self.report.findings
        states = await read_states(self.client, s.namespace)
        check_states(findings, states, self.truth.states, self.config)
        bootstrap = self.broker.bootstrap
        alerts = await read_topics(
            bootstrap, [s.topic_churn_risk, s.topic_interventions], self.scale.partitions
        )
        check_alerts(findings, alerts, self.truth.alerts)
        dead = await read_topics(bootstrap, [s.topic_deadletter], self.scale.partitions)
        check_dead_letters(findings, dead, [m.key for m in self.workload.poison])
        ahead = offsets_ahead(await self._committed_once(), await self.frontier(), self.poison_at)
        findings.offset_violations += [f"at the end: {a}" for a in ahead]
