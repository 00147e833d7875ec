"""One repeat of each measurement. Every function returns a flat dict of figures."""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from benchmarks.procs import (
    DONE_OUTCOMES,
    Proc,
    Procs,
    cpu_snapshot,
    cpu_usage,
    engagement_env,
    wait_result,
)
from benchmarks.workload import clones, customer_id, write_states
from scoring.state import CustomerState
from streams.intake import shard_of
from streams.services import Endpoints
from streams.settings import Settings
from streams.simulator import SimEvent, publish
from streams.store import StateStore, connect_redis
from streams.topics import ensure_topics

POLL_S = 0.1


@dataclass(frozen=True)
class Plan:
    smoke: bool
    repeats: int
    customers: int
    days: float
    seed: int
    partitions: int
    naive_events: int
    latency: tuple[tuple[int, float], ...]  # (events/s, seconds)
    latency_warmup: int
    latency_variants: tuple[str, ...]
    # Also the full scorer and the Faust ceiling on uvloop's event loop (an experiment).
    uvloop: bool
    memory_customers: tuple[int, ...]
    sweep_customers: int
    template_customers: int
    template_days: float

    @classmethod
    def full(cls) -> Plan:
        return cls(
            smoke=False,
            repeats=3,
            customers=100_000,
            days=1.0,
            seed=1,
            partitions=8,
            naive_events=10_000,
            latency=((1_000, 10.0), (5_000, 6.0)),
            latency_warmup=300,
            latency_variants=(
                "default",
                "within_50ms",
                "fetch_wait_10ms",
            ),
            uvloop=True,
            memory_customers=(100_000, 1_000_000),
            sweep_customers=100_000,
            template_customers=1_000,
            template_days=60.0,
        )

    @classmethod
    def smoke_plan(cls) -> Plan:
        return cls(
            smoke=True,
            repeats=1,
            customers=2_000,
            days=1.0,
            seed=1,
            partitions=8,
            naive_events=1_000,
            latency=((200, 3.0),),
            latency_warmup=50,
            latency_variants=("default",),
            uvloop=False,
            memory_customers=(2_000,),
            sweep_customers=2_000,
            template_customers=100,
            template_days=30.0,
        )


@dataclass
class Context:
    plan: Plan
    endpoints: Endpoints
    procs: Procs
    run_dir: Path
    token: str
    service_pids: dict[str, int]
    events: list[SimEvent]
    templates: list[CustomerState]
    templates_path: Path
    notes: list[str] = field(default_factory=list)

    def env(self, name: str, inputs: str, outputs: str, **overrides: str) -> dict[str, str]:
        return engagement_env(
            self.endpoints,
            app_id=f"{name}-app",
            namespace=name,
            inputs=inputs,
            outputs=outputs,
            state_dir=self.run_dir / "state",
            partitions=self.plan.partitions,
            **overrides,
        )


def settings_of(env: dict[str, str]) -> Settings:
    prefix = "ENGAGEMENT_"
    fields = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
    return Settings.model_validate(fields)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


# --- throughput ---------------------------------------------------------------------------


def throughput(ctx: Context, rep: int) -> dict[str, dict[str, Any]]:
    """Publish the workload to fresh input topics (created first, with ensure_topics), then
    read it with every variant in turn, each as its own consumer group."""
    inputs = f"{ctx.token}r{rep}"
    base = settings_of(ctx.env(inputs, inputs, inputs))
    expected = len(ctx.events)

    async def publish_inputs() -> float:
        await ensure_topics(base)
        started = time.perf_counter()
        await publish(ctx.events, base)
        return time.perf_counter() - started

    async def empty_redis() -> None:  # the previous repeat's states
        client = connect_redis(ctx.endpoints.redis_url)
        try:
            await flushdb(client)
        finally:
            await client.aclose()

    asyncio.run(empty_redis())
    publish_s = asyncio.run(publish_inputs())
    out: dict[str, dict[str, Any]] = {}
    out["full_scorer"] = scorer_run(ctx, f"{inputs}-one", inputs, 1, expected)
    out["full_scorer"]["publish_events_per_s"] = round(expected / publish_s, 1)
    out["full_scorer_agent"] = scorer_run(
        ctx, f"{inputs}-agent", inputs, 1, expected, extra_env={"ENGAGEMENT_INGEST": "agent"}
    )
    ceilings = [
        ("batches", "faust_batches_ack", "asyncio"),
        ("noack_take", "faust_noack_take_ack", "asyncio"),
        ("take", "faust_take", "asyncio"),
    ]
    if ctx.plan.uvloop:
        out["full_scorer_uvloop"] = scorer_run(
            ctx, f"{inputs}-uv", inputs, 1, expected, "benchmarks.uvloop_worker worker"
        )
        ceilings.append(("noack_take", "faust_noack_take_ack_uvloop", "uvloop"))
    for mode, key, loop in ceilings:
        env = ctx.env(f"{inputs}-{key.replace('_', '')}", inputs, inputs)
        spec = {"task": "faust", "mode": mode, "expected": expected, "loop": loop}
        out[key] = task_run(ctx, key, env, spec, timeout_s=120 + expected / 500)
    env = ctx.env(f"{inputs}-kafka", inputs, inputs)
    spec = {"task": "aiokafka", "expected": expected}
    out["aiokafka_getmany"] = task_run(ctx, "aiokafka", env, spec, timeout_s=60 + expected / 2_000)
    env = ctx.env(f"{inputs}-naive", inputs, inputs)
    limit = min(expected, ctx.plan.naive_events)
    naive = task_run(ctx, "naive", env, {"task": "naive", "limit": limit}, 180 + limit / 100)
    for key in ("scorer_per_event", "get_set_per_event"):
        out[f"naive_{key}"] = {**naive[key], "read_s": naive["read_s"]}
    out["scorer_without_faust"] = naive["scorer_batched_in_process"]
    out["two_workers"] = scorer_run(ctx, f"{inputs}-two", inputs, 2, expected)
    return out


def scorer_run(
    ctx: Context,
    name: str,
    inputs: str,
    workers: int,
    expected: int,
    module: str = "streams.cli worker",
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start ``workers`` scorer workers on the published topics and time them from the
    first scored event to the last, from engagement_events_total on their /metrics."""
    env = {**ctx.env(name, inputs, f"{inputs}.{name.rpartition('-')[2]}"), **(extra_env or {})}
    procs = [ctx.procs.worker(f"{name}{i}", env, module) for i in range(workers)]
    try:
        return _measure_scorer(ctx, procs, expected)
    finally:
        ctx.procs.stop(procs)


def _measure_scorer(ctx: Context, procs: list[Proc], expected: int) -> dict[str, Any]:
    """events/s = all events / (time the last one was scored - time the first worker was
    assigned its partitions). Timing from assignment, not from the first scored event,
    keeps in the window the work done on events read before the first commit (on the
    event clock they can wait in the event-time buffer)."""
    pids = {**ctx.service_pids, **{f"worker{i}": p.pid for i, p in enumerate(procs)}}
    spawned = time.monotonic()
    deadline = spawned + 120 + expected / 300
    assigned: tuple[float, tuple[float, dict[str, float | None]]] | None = None
    first: tuple[float, float] | None = None
    split: tuple[float, float] | None = None
    cpu_last = None
    while True:
        for p in procs:
            p.check("scoring")
        if assigned is None:
            if any(p.owned_shards() for p in procs):
                assigned = (time.monotonic(), cpu_snapshot(pids))
            else:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no partition assigned; log:\n{procs[0].tail()}")
                time.sleep(POLL_S / 2)
                continue
        counts = [p.events() or {} for p in procs]
        now = time.monotonic()
        done = sum(c.get(o, 0.0) for c in counts for o in DONE_OUTCOMES)
        if first is None and done > 0:
            first = (now, done)
        if split is None and len(procs) > 1:
            owned = [set(p.owned_shards()) for p in procs]
            union = set().union(*owned)
            if all(owned) and len(union) == ctx.plan.partitions == sum(map(len, owned)):
                split = (time.monotonic(), done)
        if done >= expected:
            cpu_last = cpu_snapshot(pids)
            break
        if now > deadline:
            raise TimeoutError(f"scored {done} of {expected} events; log:\n{procs[0].tail()}")
        time.sleep(POLL_S)
    assert first is not None
    window = max(1e-9, now - assigned[0])
    outcomes: dict[str, float] = {}
    for c in counts:
        for outcome, n in c.items():
            outcomes[outcome] = outcomes.get(outcome, 0.0) + n
    result: dict[str, Any] = {
        "events": expected,
        "events_per_s": round(done / window, 1),
        "window_s": round(window, 3),
        "startup_s": round(assigned[0] - spawned, 2),
        "first_scored_after_s": round(first[0] - assigned[0], 2),
        # The same rate timed from the first /metrics sample with scored events, as a
        # check: much higher would mean work hidden before it.
        "events_per_s_after_first_scored": round((done - first[1]) / max(1e-9, now - first[0]), 1),
        "outcomes": {k: int(v) for k, v in sorted(outcomes.items())},
        "cpu_cores": cpu_usage(assigned[1], cpu_last),
    }
    if len(procs) > 1:
        result["applied_per_worker"] = [int(c.get("applied", 0.0)) for c in counts]
        if split is not None and now > split[0]:
            result["events_per_s_after_split"] = round((done - split[1]) / (now - split[0]), 1)
            result["split_after_s"] = round(split[0] - assigned[0], 2)
    return result


def task_run(
    ctx: Context,
    name: str,
    env: dict[str, str],
    spec: dict[str, Any],
    timeout_s: float,
    on_first: Callable[[Proc], None] | None = None,
) -> dict[str, Any]:
    """Run a benchmarks.tasks process and return its result, with the broker's and Redis'
    CPU between its first batch and its result. ``on_first`` is called once the task
    has its first batch (the profiler attaches there)."""
    out = ctx.run_dir / "logs" / f"{ctx.procs.next_name(name)}.result.json"
    proc = ctx.procs.task(name, env, {**spec, "out": str(out)})
    marker = Path(f"{out}.first")
    try:
        deadline = time.monotonic() + timeout_s
        while not marker.exists() and not out.exists():
            proc.check("starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: nothing read after {timeout_s:.0f}s\n{proc.tail()}")
            time.sleep(0.02)
        if on_first is not None:
            on_first(proc)
        before = cpu_snapshot(ctx.service_pids)
        result = wait_result(proc, out, max(1.0, deadline - time.monotonic()))
        result["cpu_cores_services"] = cpu_usage(before, cpu_snapshot(ctx.service_pids))
        return result
    finally:
        ctx.procs.stop([proc])


# --- latency ------------------------------------------------------------------------------


class AlertCollector:
    """Reads an alert topic from the start; remembers each alert by trigger_event_id with
    its record timestamp and when it was received."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.seen: dict[str, tuple[int, int, float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=50)
            received = time.time() * 1000
            for records in batches.values():
                for r in records:
                    alert = orjson.loads(r.value)
                    trigger = alert.get("trigger_event_id")
                    if trigger:
                        self.seen[trigger] = (r.timestamp, r.timestamp_type, received)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


_HIST = re.compile(r"^(engagement_batch_(?:seconds|events))_(sum|count) ([0-9.e+-]+)$")


def batch_totals(worker: Proc | None) -> dict[str, float]:
    """Sums and counts of the worker's batch histograms (seconds per batch, events)."""
    body = worker.get("/metrics") if worker is not None else None
    found: dict[str, float] = {}
    for line in (body or "").splitlines():
        m = _HIST.match(line)
        if m:
            found[f"{m.group(1)}_{m.group(2)}"] = float(m.group(3))
    return found


async def _latency_phase(
    producer: AIOKafkaProducer,
    collector: AlertCollector,
    topic: str,
    rate: int,
    count: int,
    tag: str,
    worker: Proc | None = None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    batches_before = batch_totals(worker)
    futures: dict[str, asyncio.Future[Any]] = {}
    started, started_wall = loop.time(), time.time()
    i = 0
    while i < count:
        due = min(count, int((loop.time() - started) * rate) + 1)
        while i < due:
            event_id, customer = f"{tag}-e{i}", f"{tag}-c{i}"
            value = orjson.dumps(
                {
                    "event_id": event_id,
                    "customer_id": customer,
                    "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "type": "nps",
                    "score": 1,
                }
            )
            futures[event_id] = await producer.send(topic, value, key=customer.encode())
            i += 1
        await asyncio.sleep(0.001)
    send_s = loop.time() - started
    stamps = {event_id: (await f).timestamp for event_id, f in futures.items()}
    deadline = loop.time() + 60 + count / rate
    while any(e not in collector.seen for e in stamps) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    appended = [collector.seen[e][0] - t for e, t in stamps.items() if e in collector.seen]
    received = [collector.seen[e][2] - t for e, t in stamps.items() if e in collector.seen]
    kinds = {collector.seen[e][1] for e in stamps if e in collector.seen}
    if not appended:
        raise RuntimeError(f"no alert arrived for the {rate}/s phase")
    last = max(collector.seen[e][2] for e in stamps if e in collector.seen) / 1000
    batches = {k: v - batches_before.get(k, 0.0) for k, v in batch_totals(worker).items()}
    n_batches = batches.get("engagement_batch_seconds_count", 0.0)
    drain_s = last - started_wall - send_s
    return {
        "target_rate": rate,
        "events": count,
        "achieved_rate": round(count / send_s, 1),
        "alerts": len(appended),
        "missing": count - len(appended),
        "p50_ms": percentile(appended, 50),
        "p95_ms": percentile(appended, 95),
        "p99_ms": percentile(appended, 99),
        "max_ms": max(appended),
        "mean_ms": round(statistics.fmean(appended), 1),
        "received_p50_ms": round(percentile(received, 50), 1),
        "received_p99_ms": round(percentile(received, 99), 1),
        "alert_timestamp_type": "LogAppendTime" if kinds == {1} else "CreateTime",
        "last_alert_after_last_event_s": round(drain_s, 3),
        # What the worker got through: all events over the time until the last alert.
        "sustained_rate": round(len(appended) / (send_s + max(0.0, drain_s)), 1),
        # From the worker's histograms: batches (scoring + publishing + acks) in the phase.
        "batches": int(n_batches),
        "batch_mean_events": round(
            batches.get("engagement_batch_events_sum", 0.0) / max(1.0, n_batches), 1
        ),
        "batch_mean_ms": round(
            1000 * batches.get("engagement_batch_seconds_sum", 0.0) / max(1.0, n_batches), 2
        ),
        "worker_busy_share": round(batches.get("engagement_batch_seconds_sum", 0.0) / send_s, 3),
    }


# name -> (worker module, extra environment). Only "default" is the scorer as shipped; the
# others show where its latency goes (see benchmarks/patched_worker.py).
LATENCY_VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "default": ("streams.cli worker", {}),
    "within_50ms": ("streams.cli worker", {"ENGAGEMENT_BATCH_WITHIN_S": "0.05"}),
    "fetch_wait_10ms": ("benchmarks.patched_worker", {"BENCH_FETCH_MAX_WAIT_MS": "10"}),
}


def latency(ctx: Context, rep: int) -> dict[str, dict[str, dict[str, Any]]]:
    """A worker on the wall clock; a producer sends detractor NPS answers (each one an
    intervention alert) of distinct customers at fixed rates, a consumer of the
    interventions topic matches the alerts by trigger_event_id. Once per variant."""
    out = {}
    for variant in ctx.plan.latency_variants:
        module, extra = LATENCY_VARIANTS[variant]
        name = f"{ctx.token}l{rep}{variant.replace('_', '')}"
        env = ctx.env(name, name, name, ENGAGEMENT_CLOCK="wall", **extra)
        settings = settings_of(env)
        asyncio.run(ensure_topics(settings))
        worker = ctx.procs.worker(name, env, module)
        try:
            deadline = time.monotonic() + 90
            while not worker.owned_shards():
                worker.check("starting")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"latency worker owns no shard after 90s\n{worker.tail()}")
                time.sleep(POLL_S)
            out[variant] = asyncio.run(_latency_phases(ctx, settings, name, worker))
        finally:
            ctx.procs.stop([worker])
    return out


async def _latency_phases(
    ctx: Context, settings: Settings, tag: str, worker: Proc | None = None
) -> dict[str, dict[str, Any]]:
    collector = AlertCollector(
        settings.kafka_bootstrap, settings.topic_interventions, settings.partitions
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0)
    await collector.start()
    await producer.start()
    try:
        topic = settings.topic_feedback
        warmup = ctx.plan.latency_warmup
        await _latency_phase(producer, collector, topic, 200, warmup, f"{tag}-warm")
        out = {}
        for rate, seconds in ctx.plan.latency:
            count = int(rate * seconds)
            phase = await _latency_phase(
                producer, collector, topic, rate, count, f"{tag}-{rate}", worker
            )
            out[str(rate)] = phase
        return out
    finally:
        await producer.stop()
        await collector.stop()


# --- Redis memory -------------------------------------------------------------------------


async def _used_memory(client: Any) -> int:
    """used_memory once no lazy free is pending (a FLUSHDB may free in the background)."""
    for _ in range(200):
        info = await client.info("memory")
        if not int(info.get("lazyfree_pending_objects", 0)):
            break
        await asyncio.sleep(0.05)
    return int(info["used_memory"])


async def flushdb(client: Any) -> None:
    await client.execute_command("FLUSHDB", "SYNC")


async def redis_memory(ctx: Context, customers: int) -> dict[str, Any]:
    """Realistic states (see workload.customer_states) cloned to ``customers`` ids and
    written through StateStore.commit into an empty database; used_memory before and
    after, and MEMORY USAGE of a sample of keys, of the due zsets and of the meta hashes."""
    client = connect_redis(ctx.endpoints.redis_url)
    shards = ctx.plan.partitions
    try:
        await flushdb(client)
        await client.execute_command("MEMORY", "PURGE")
        before = await _used_memory(client)
        store = StateStore(client, "eng")
        started = time.perf_counter()
        written = await write_states(store, clones(ctx.templates, customers), shards)
        write_s = time.perf_counter() - started
        after = await _used_memory(client)
        sample = random.Random(7).sample(range(customers), min(1_000, customers))
        keys = [
            store.keys(shard_of(customer_id(n), shards)).customer(customer_id(n)) for n in sample
        ]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key)
            pipe.strlen(key)
        replies = await pipe.execute()
        usage, lengths = replies[0::2], replies[1::2]
        pipe = client.pipeline(transaction=False)
        for s in range(shards):
            pipe.memory_usage(store.keys(s).due, samples=0)
            pipe.zcard(store.keys(s).due)
            pipe.memory_usage(store.keys(s).meta, samples=0)
        replies = await pipe.execute()
        due_bytes, due_members, meta_bytes = (
            sum(replies[0::3]),
            sum(replies[1::3]),
            sum(replies[2::3]),
        )
        keys_total = await client.dbsize()
    finally:
        await flushdb(client)
        await client.aclose()
    return {
        "customers": written,
        "bytes_per_customer": round((after - before) / written, 1),
        "used_memory_delta_bytes": after - before,
        "memory_usage_customer_key_mean": round(statistics.fmean(usage), 1),
        "state_json_bytes_mean": round(statistics.fmean(lengths), 1),
        "key_name_bytes_mean": round(statistics.fmean(len(k) for k in keys), 1),
        "due_zset_bytes_per_member": round(due_bytes / max(1, due_members), 1),
        "due_zset_members": due_members,
        "meta_hash_bytes_total": meta_bytes,
        "redis_keys": keys_total,
        "write_customers_per_s": round(written / write_s, 1),
    }


# --- sweep --------------------------------------------------------------------------------


SWEEP_AT = 1_800_000_000.0  # any instant: every history is moved so its check is due then


def sweep(ctx: Context, rep: int) -> dict[str, Any]:
    name = f"{ctx.token}s{rep}"
    env = ctx.env(name, name, name, ENGAGEMENT_CLOCK="wall")
    spec = {
        "task": "sweep",
        "templates": str(ctx.templates_path),
        "customers": ctx.plan.sweep_customers,
        "at": SWEEP_AT,
    }
    try:
        return task_run(ctx, "sweep", env, spec, timeout_s=120 + ctx.plan.sweep_customers / 500)
    finally:

        async def flush() -> None:
            client = connect_redis(ctx.endpoints.redis_url)
            try:
                await flushdb(client)
            finally:
                await client.aclose()

        asyncio.run(flush())
