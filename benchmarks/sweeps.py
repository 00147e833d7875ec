"""The sweep section: ``Scorer.sweep`` over customers whose inactivity checks are all due,
in one process, and in two processes each sweeping half the shards (as two workers would:
a worker sweeps only the shards it owns, so the sweep scales out with the partitions)."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.procs import cpu_snapshot, cpu_usage, wait_result
from benchmarks.sections import Context, empty_redis, task_run, wait_first

SWEEP_AT = 1_800_000_000.0  # any instant: every history is moved so its check is due then


def _spec(ctx: Context) -> dict[str, Any]:
    return {
        "task": "sweep",
        "templates": str(ctx.templates_path),
        "customers": ctx.plan.sweep_customers,
        "at": SWEEP_AT,
    }


def _timeout_s(ctx: Context) -> float:
    return 120 + ctx.plan.sweep_customers / 500


def sweep(ctx: Context, rep: int) -> dict[str, Any]:
    name = f"{ctx.token}s{rep}"
    env = ctx.env(name, name, name, ENGAGEMENT_CLOCK="wall")
    try:
        return task_run(ctx, "sweep", env, _spec(ctx), timeout_s=_timeout_s(ctx))
    finally:
        empty_redis(ctx)


def sweep_two_workers(ctx: Context, rep: int) -> dict[str, Any]:
    """The same due customers written once, then swept by two processes at once, one
    taking the even shards and one the odd: customers per second from the first one's
    start to the last one's end."""
    name = f"{ctx.token}s2w{rep}"
    env = ctx.env(name, name, name, ENGAGEMENT_CLOCK="wall")
    spec = _spec(ctx)
    timeout_s = _timeout_s(ctx)
    logs = ctx.run_dir / "logs"
    go = logs / f"{name}.go"
    try:
        written = task_run(ctx, "sweep-write", env, {**spec, "sweep": False}, timeout_s)
        outs = [logs / f"{ctx.procs.next_name(f'{name}-{half}')}.result.json" for half in (0, 1)]
        procs = [
            ctx.procs.task(
                f"sweep-{half}",
                env,
                {
                    **spec,
                    "write": False,
                    "shards": list(range(half, ctx.plan.partitions, 2)),
                    "go": str(go),
                    "out": str(out),
                },
            )
            for half, out in enumerate(outs)
        ]
        try:
            deadline = time.monotonic() + timeout_s
            # Both set up (connected, scorer built) before either starts sweeping.
            for proc, out in zip(procs, outs, strict=True):
                wait_first(proc, out, deadline)
            before = cpu_snapshot(ctx.service_pids)
            go.touch()
            results = [
                wait_result(proc, out, max(1.0, deadline - time.monotonic()))
                for proc, out in zip(procs, outs, strict=True)
            ]
            services = cpu_usage(before, cpu_snapshot(ctx.service_pids))
        finally:
            ctx.procs.stop(procs)
    finally:
        empty_redis(ctx)
    swept = sum(r["customers_swept"] for r in results)
    seconds = max(r["ended_at"] for r in results) - min(r["started_at"] for r in results)
    return {
        "customers_written": written["customers_written"],
        "customers_swept": swept,
        "still_due": sum(r["still_due"] for r in results),
        "alerts": sum(r["alerts"] for r in results),
        "seconds": round(seconds, 3),
        "customers_per_s": round(swept / seconds, 1),
        "cpu_cores": round(sum(r["cpu_cores"] * r["seconds"] for r in results) / seconds, 3),
        "cpu_cores_services": services,
    }
