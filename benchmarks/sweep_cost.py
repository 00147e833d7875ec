"""What a swept customer costs the worker and Redis, in-process, against a real (embedded)
Valkey:

    python -m benchmarks.sweep_cost [--customers 100000] [--repeats 3] [--templates 1000]
                                    [--parts]

The sweep section of ``benchmarks.run`` times ``Scorer.sweep`` in a task process; this
runs the same sweep (the same due customers: ``workload.due_clones`` of simulated
templates, every check due at one instant, 8 shards, pages of 2,000) in this process, with
the worker's collector settings (``streams.cli.settle_heap``), and splits the cost: the
worker's CPU per customer, Valkey's CPU per customer (from /proc, over the sweep alone),
and Valkey's own time per customer by command (INFO commandstats: what the scripts spend
is in EVALSHA, the commands they call are counted too). Each repeat writes the customers
into an empty Valkey first (not timed). ``--parts`` instead times the sweep's pure parts
one by one (``parts``): what a settle-only customer and an evaluated one cost, and in what.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.ab import valkey_server
from benchmarks.procs import cpu_seconds

SHARDS = 8
PAGE = 2_000
SWEEP_AT = 1_800_000_000.0
# The client's and this harness's own commands, not the sweep's.
_HOUSEKEEPING = tuple(f"cmdstat_{c}" for c in ("config", "info", "hello", "client"))


@dataclass(frozen=True, slots=True)
class SweepCost:
    customers: int
    customers_per_s: float
    worker_cpu_us: float  # per customer
    redis_cpu_us: float  # per customer
    alerts: int
    still_due: int  # customers whose check is still due once the sweep stopped: 0
    # command -> Valkey's microseconds per customer (INFO commandstats)
    redis_commands_us: dict[str, float] = field(default_factory=dict)


async def measure(port: int, server_pid: int, templates_file: Path, customers: int) -> SweepCost:
    """One repeat: write the due customers, then sweep every shard until none is left."""
    from benchmarks.workload import (
        due_clones,
        read_templates,
        still_due,
        sweep_all,
        sweeping_scorer,
        write_states,
    )
    from scoring.config import load_config
    from streams.cli import settle_heap
    from streams.state.redis_client import connect_redis
    from streams.state.store import StateStore

    shards = list(range(SHARDS))
    client: Any = connect_redis(f"redis://127.0.0.1:{port}/0")
    try:
        await client.flushall()
        store = StateStore(client, f"sweep{time.time_ns()}")
        templates = read_templates(templates_file)
        written = await write_states(store, due_clones(templates, customers, SWEEP_AT), SHARDS)
        del templates
        scorer = sweeping_scorer(store, load_config(None), SHARDS, SWEEP_AT)
        settle_heap()
        await client.config_resetstat()
        redis_began = cpu_seconds(server_pid) or 0.0
        began, cpu_began = time.perf_counter(), time.process_time()
        alerts, _ = await sweep_all(scorer, shards, PAGE)
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        redis_cpu = (cpu_seconds(server_pid) or 0.0) - redis_began
        stats = await client.info("commandstats")
        left = await still_due(store, shards, SWEEP_AT)
    finally:
        await client.aclose()
    return SweepCost(
        customers=written,
        customers_per_s=written / elapsed,
        worker_cpu_us=cpu / written * 1e6,
        redis_cpu_us=redis_cpu / written * 1e6,
        alerts=alerts,
        still_due=left,
        redis_commands_us={
            name.removeprefix("cmdstat_"): s["usec"] / written
            for name, s in stats.items()
            if name.startswith("cmdstat_") and not name.startswith(_HOUSEKEEPING)
        },
    )


def _templates(count: int) -> list[bytes]:
    """The stored forms of ``count`` simulated customers, as ``benchmarks.run`` makes its
    state templates (the full plan's history length and seed)."""
    from benchmarks.sections import Plan
    from benchmarks.workload import customer_states
    from scoring.config import load_config

    plan = Plan.full()
    return customer_states(count, plan.template_days, plan.seed, load_config(None))


def run(customers: int, repeats: int, template_customers: int) -> list[SweepCost]:
    from benchmarks.workload import write_templates

    with tempfile.TemporaryDirectory() as tmp:
        templates = Path(tmp) / "templates.jsonl"
        write_templates(templates, _templates(template_customers))
        with valkey_server() as (port, pid):
            return [asyncio.run(measure(port, pid, templates, customers)) for _ in range(repeats)]


def parts(customers: int, repeats: int, template_customers: int) -> list[tuple[str, int, float]]:
    """The sweep's pure parts, timed apart (no Redis): (what, how many, median us each).
    The blobs are the due customers' stored forms; ``sweep_shard`` tells settle-only
    customers (``ShardWrite.settled``) from those it evaluates."""
    from benchmarks.workload import due_clones
    from scoring.codec import decode, encode, with_exact_check
    from scoring.config import load_config
    from scoring.engagement import engagement_score
    from scoring.engine import sweep_due
    from scoring.schedule import settle_stored, settled_check_at
    from scoring.scores import churn_risk
    from scoring.stored import check_inputs
    from streams.cli import settle_heap
    from streams.pipeline.sweeper import sweep_shard
    from streams.state.kpis import KpiDelta
    from streams.state.store import ShardView

    config = load_config(None)
    templates = [decode(b) for b in _templates(template_customers)]
    blobs = {s.customer_id: encode(s) for s in due_clones(templates, customers, SWEEP_AT)}
    view = ShardView(shard=0, epoch="0", offsets={}, marks={}, customers={})
    write, _ = sweep_shard(view, blobs, SWEEP_AT, SWEEP_AT, config)
    settled_blobs = {c: raw for c, raw in blobs.items() if c in write.settled}
    settle_only = list(settled_blobs.values())
    evaluated = {c: raw for c, raw in blobs.items() if c not in write.settled}
    inputs = [i for i in map(check_inputs, settle_only) if i is not None]
    exact = [settled_check_at(i, config) for i in inputs]
    states = [decode(raw) for raw in evaluated.values()]
    outcomes = [sweep_due(s, SWEEP_AT, SWEEP_AT, config)[0] for s in states]
    alerting = [s for s, o in zip(states, outcomes, strict=True) if o.alerts]
    quiet = [s for s, o in zip(states, outcomes, strict=True) if not o.alerts]

    def kpis() -> None:
        delta = KpiDelta()
        for before, after in zip(states, outcomes, strict=True):
            delta.add_evaluation(before, after.state, SWEEP_AT)
        delta.apply_to(write)

    def each(call: Callable[[Any], object], items: Iterable[Any]) -> Callable[[], None]:
        # Nothing is kept: a list of results would be walked by every collection.
        def run() -> None:
            for item in items:
                call(item)

        return run

    at = SWEEP_AT
    timed: list[tuple[str, int, Callable[[], object]]] = [
        ("settle-only: sweep_shard", len(settle_only),
         lambda: sweep_shard(view, settled_blobs, at, at, config)),
        ("settle-only: settle_stored", len(settle_only),
         lambda: settle_stored(settled_blobs, at, config)),
        ("settle-only: check_inputs", len(settle_only), each(check_inputs, settle_only)),
        ("settle-only: settled_check_at", len(inputs),
         each(lambda i: settled_check_at(i, config), inputs)),
        ("settle-only: with_exact_check", len(exact),
         each(lambda pair: with_exact_check(*pair), list(zip(settle_only, exact, strict=True)))),
        ("evaluated: sweep_shard", len(evaluated),
         lambda: sweep_shard(view, evaluated, at, at, config)),
        ("evaluated: decode", len(evaluated), each(decode, evaluated.values())),
        ("evaluated: sweep_due, no alert", len(quiet),
         each(lambda s: sweep_due(s, at, at, config), quiet)),
        ("evaluated: sweep_due, alerting", len(alerting),
         each(lambda s: sweep_due(s, at, at, config), alerting)),
        ("alerting: engagement_score", len(alerting),
         each(lambda s: engagement_score(s, at, config), alerting)),
        ("alerting: churn_risk (with reasons)", len(alerting),
         each(lambda s: churn_risk(s, at, config), alerting)),
        ("evaluated: KPI deltas", len(states), kpis),
        ("evaluated: encode", len(outcomes), each(lambda o: encode(o.state), outcomes)),
    ]  # fmt: skip
    settle_heap()  # the worker's collector settings (what is here now stays)
    out = []
    for name, count, call in timed:
        seconds = []
        for _ in range(repeats):
            began = time.process_time()
            call()
            seconds.append(time.process_time() - began)
        out.append((name, count, statistics.median(seconds) / max(1, count) * 1e6))
    return out


def report(costs: list[SweepCost]) -> str:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    lines = [
        f"{costs[0].customers:,} due customers, {len(costs)} repeat(s); median (min-max)",
        "",
    ]
    for label, values, unit in (
        ("customers/s", [c.customers_per_s for c in costs], ""),
        ("worker CPU per customer", [c.worker_cpu_us for c in costs], " us"),
        ("Valkey CPU per customer", [c.redis_cpu_us for c in costs], " us"),
    ):
        lines.append(
            f"{label:28} {median(values):10,.1f}{unit} ({min(values):,.1f}-{max(values):,.1f})"
        )
    lines.append(f"{'alerts':28} {costs[0].alerts:10,}")
    lines.append("")
    lines.append("Valkey's time per customer by command (us, median):")
    names = sorted(
        {n for c in costs for n in c.redis_commands_us},
        key=lambda n: -median([c.redis_commands_us.get(n, 0.0) for c in costs]),
    )
    for name in names:
        lines.append(
            f"  {name:24} {median([c.redis_commands_us.get(name, 0.0) for c in costs]):8.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--templates", type=int, default=1_000, help="simulated templates")
    parser.add_argument(
        "--parts", action="store_true", help="time the sweep's pure parts apart instead"
    )
    args = parser.parse_args()
    if args.parts:
        print(f"{'part':40} {'customers':>9} {'us each':>8} (CPU, median of {args.repeats})")
        for name, count, us in parts(args.customers, args.repeats, args.templates):
            print(f"{name:40} {count:9,} {us:8.2f}")
        return
    print(report(run(args.customers, args.repeats, args.templates)))


if __name__ == "__main__":
    main()
