"""One repeat of each measurement. Every function returns a flat dict of figures."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from streams.dev.services import Endpoints
from streams.dev.simulator import SimEvent, publish
from streams.kafka.topics import ensure_topics
from streams.pipeline.intake import shard_of
from streams.settings import Settings
from streams.state.redis_client import connect_redis
from streams.state.store import StateStore

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
    # Also the full scorer and the Faust ceiling on asyncio's own event loop (the worker's
    # default is uvloop's: ENGAGEMENT_EVENT_LOOP).
    asyncio_variants: bool
    memory_customers: tuple[int, ...]
    sweep_customers: int
    template_customers: int
    template_days: float
    # A directory: py-spy (--gil) records the latency worker over each measured phase.
    latency_profile: str | None = None

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
                "default_one_in_ten_alerts",
                "fetch_wait_10ms",
                "fetch_wait_10ms_one_in_ten_alerts",
                "aiokafka_fetching",
                "aiokafka_fetching_one_in_ten_alerts",
            ),
            asyncio_variants=True,
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
            latency_variants=("default", "default_one_in_ten_alerts"),
            asyncio_variants=False,
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

    empty_redis(ctx)  # the previous repeat's states
    publish_s = asyncio.run(publish_inputs())
    out: dict[str, dict[str, Any]] = {}
    out["full_scorer"] = scorer_run(ctx, f"{inputs}-one", inputs, 1, expected)
    out["full_scorer"]["publish_events_per_s"] = round(expected / publish_s, 1)
    out["full_scorer_agent"] = scorer_run(
        ctx, f"{inputs}-agent", inputs, 1, expected, extra_env={"ENGAGEMENT_INGEST": "agent"}
    )
    # Every ceiling and baseline on the worker's event loop (uvloop: benchmarks/tasks.py).
    ceilings = [
        ("batches", "faust_batches_ack", "uvloop"),
        ("noack_take", "faust_noack_take_ack", "uvloop"),
        ("take", "faust_take", "uvloop"),
    ]
    if ctx.plan.asyncio_variants:
        on_asyncio = {"ENGAGEMENT_EVENT_LOOP": "asyncio"}
        out["full_scorer_asyncio"] = scorer_run(
            ctx, f"{inputs}-aio", inputs, 1, expected, extra_env=on_asyncio
        )
        ceilings.append(("noack_take", "faust_noack_take_ack_asyncio", "asyncio"))
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
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start ``workers`` scorer workers on the published topics and time them from the
    first scored event to the last, from engagement_events_total on their /metrics."""
    env = {**ctx.env(name, inputs, f"{inputs}.{name.rpartition('-')[2]}"), **(extra_env or {})}
    procs = [ctx.procs.worker(f"{name}{i}", env) for i in range(workers)]
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
    try:
        deadline = time.monotonic() + timeout_s
        wait_first(proc, out, deadline)
        if on_first is not None:
            on_first(proc)
        before = cpu_snapshot(ctx.service_pids)
        result = wait_result(proc, out, max(1.0, deadline - time.monotonic()))
        result["cpu_cores_services"] = cpu_usage(before, cpu_snapshot(ctx.service_pids))
        return result
    finally:
        ctx.procs.stop([proc])


def wait_first(proc: Proc, out: Path, deadline: float) -> None:
    """Wait until a task has its first batch (it writes ``<out>.first``) or its result."""
    marker = Path(f"{out}.first")
    while not marker.exists() and not out.exists():
        proc.check("starting")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name}: nothing read in time\n{proc.tail()}")
        time.sleep(0.02)


# --- Redis memory -------------------------------------------------------------------------


async def _used_memory(client: Any) -> int:
    """used_memory once no lazy free is pending (a FLUSHDB may free in the background)."""
    for _ in range(200):
        info = await client.info("memory")
        if not int(info.get("lazyfree_pending_objects", 0)):
            break
        await asyncio.sleep(0.05)
    return int(info["used_memory"])


def empty_redis(ctx: Context) -> None:
    """Everything in the run's Redis deleted (FLUSHDB SYNC)."""

    async def empty() -> None:
        client = connect_redis(ctx.endpoints.redis_url)
        try:
            await flushdb(client)
        finally:
            await client.aclose()

    asyncio.run(empty())


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
