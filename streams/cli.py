"""The `engagement` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

from streams.settings import Settings, SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engagement", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    services = sub.add_parser("services", help="start/stop the embedded broker and Redis")
    services.add_argument("action", choices=["up", "down", "status"])
    services.add_argument("--state-dir", type=Path, default=Path(".engagement"))

    worker = sub.add_parser("worker", help="run a scoring worker")
    worker.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info"])

    simulate = sub.add_parser("simulate", help="publish synthetic events to the input topics")
    simulate.add_argument("--customers", type=int, default=300)
    simulate.add_argument("--days", type=float, default=90.0)
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--rate", type=float, default=None, help="events per second")

    customer = sub.add_parser("customer", help="a customer's state, scores and reasons")
    customer.add_argument("customer_id")
    customer.add_argument("--json", action="store_true")

    replay = sub.add_parser("replay", help="re-score the input topics into a new namespace")
    replay.add_argument("--from-beginning", action="store_true", required=True,
                        help="read the input topics from their beginning (required for now: "
                        "the only mode)")  # fmt: skip
    replay.add_argument("--namespace", required=True, metavar="NAME",
                        help="a new Redis namespace to write into")  # fmt: skip
    replay.add_argument("--emit", action="store_true", help="publish the replay's alerts")
    replay.add_argument("--force", action="store_true",
                        help="delete what the namespace holds, then replay into it")  # fmt: skip
    replay.add_argument("--config", type=Path, metavar="FILE",
                        help="scoring TOML (default: ENGAGEMENT_SCORING_CONFIG)")  # fmt: skip
    replay.add_argument("--model-params", type=Path, metavar="FILE",
                        help="fitted parameters (default: ENGAGEMENT_MODEL_PARAMS)")  # fmt: skip
    replay.add_argument("--json", action="store_true", help="the comparison as JSON")

    kpis = sub.add_parser("kpis", help="population KPIs: all-time and a rolling window")
    kpis.add_argument("--json", action="store_true")
    kpis.add_argument("--window-days", type=int, default=30, help="window, in scorer days")

    demo = sub.add_parser("demo", help="embedded services, a worker and a simulator")
    demo.add_argument("--customers", type=int, default=300)
    demo.add_argument("--days", type=float, default=90.0)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--seconds", type=float, default=60.0)

    model = sub.add_parser("model", help="the BG/NBD and Gamma-Gamma churn/CLV model")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    model_fit = model_sub.add_parser("fit", help="fit the model to a transactions file")
    model_fit.add_argument("--transactions", type=Path, required=True, help="the file to fit")
    model_fit.add_argument(
        "--format",
        choices=["csv", "cdnow"],
        default="csv",
        help="csv: a customer_id,date,amount header; cdnow: the BG/NBD paper's data file",
    )
    model_fit.add_argument("--calibration-end", required=True, help="last day fitted, YYYY-MM-DD")
    model_fit.add_argument(
        "--out",
        type=Path,
        default=Path("model-params.json"),
        help="the parameters (JSON) for ENGAGEMENT_MODEL_PARAMS; default model-params.json",
    )
    model_fit.add_argument(
        "--time-unit-days", type=float, default=7.0, help="the model's time unit; 7: weeks"
    )

    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "services":
            from streams.dev.services import cmd_services

            return cmd_services(args.action, args.state_dir)
        if args.command == "demo":
            from streams.dev.demo import run_demo

            return run_demo(args.customers, args.days, args.seed, args.seconds)
        if args.command == "model":
            from streams.tools.modelfit import run_fit

            return run_fit(args)
        settings = load_settings()
        if args.command == "worker":
            return run_worker(settings, args.loglevel)
        if args.command == "simulate":
            return asyncio.run(_simulate(settings, args))
        if args.command == "customer":
            return asyncio.run(_customer(settings, args.customer_id, args.json))
        if args.command == "kpis":
            return asyncio.run(_kpis(settings, args.window_days, args.json))
        if args.command == "replay":
            from streams.tools.replay import cmd_replay

            return cmd_replay(settings, args)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def run_worker(settings: Settings, loglevel: str) -> int:
    from streams.kafka import seam
    from streams.kafka.topics import ensure_topics
    from streams.tools.modelfit import scoring_config
    from streams.worker.wiring import create_app

    try:
        allowed = seam.check(settings.ingest)  # before anything connects: refused at once
    except seam.SeamMismatch as exc:
        print(f"engagement worker: {exc}", file=sys.stderr)
        return 2
    config = scoring_config(settings)
    aligned = asyncio.run(ensure_topics(settings))
    asyncio.set_event_loop(new_event_loop(settings.event_loop))
    runtime = create_app(settings, config, aligned, allowed)
    worker = quiet_worker(runtime.app, loglevel)
    settle_heap()
    worker.execute_from_commandline()
    return 0


def quiet_worker(app: Any, loglevel: str) -> Any:
    """Faust's worker for ``app``, logging at ``loglevel`` and without its terminal spinner.

    The spinner turns each log call into a tick: with it, the worker sets the root logger
    to DEBUG (its handlers filter at ``loglevel``), so every debug call of aiokafka, Faust
    and mode builds a record: per fetch request, per partition, per alert sent, a share of
    the worker's CPU a profile shows. Without it the root logger stays at ``loglevel``."""
    import faust

    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.spinner = None
    return worker


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        # The policy too: Faust and aiokafka ask for the running loop, but a thread that
        # makes its own loop (Faust's consumer thread) gets it from the policy.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


# Scoring allocates many short-lived objects per event; with the default threshold (700)
# the collector runs every few events and walks the young objects each time.
GC_GEN0_THRESHOLD = 10_000


def settle_heap() -> None:
    """What is loaded before the worker starts lives as long as the process: moved out of
    the collector's sight (gc.freeze), so its collections walk only what scoring makes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


async def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from streams.dev.simulator import generate, publish
    from streams.kafka.topics import ensure_topics

    # Create the topics with the right partition count before a broker auto-creates them
    # with its own default (every record would then be rerouted).
    await ensure_topics(settings)
    start = datetime.now(tz=UTC) - timedelta(days=args.days)
    events = generate(args.customers, args.days, args.seed, start)
    sent = await publish(events, settings, rate=args.rate)
    print(f"published {sent} events for {args.customers} customers")
    return 0


async def _customer(settings: Settings, customer_id: str, as_json: bool) -> int:
    from streams.pipeline.intake import shard_of
    from streams.state.redis_client import redis_of
    from streams.state.store import StateStore
    from streams.tools.modelfit import scoring_config
    from streams.tools.report import customer_report, format_report

    client = redis_of(settings)
    try:
        store = StateStore(client, settings.namespace)
        shard = shard_of(customer_id, settings.partitions)
        state = await store.customer(shard, customer_id)
        if state is None:
            print(f"no state for customer {customer_id!r}", file=sys.stderr)
            return 1
        now = time.time()
        if settings.clock == "event":
            marks = (await store.metas([shard]))[shard].marks
            now = max(marks.values(), default=state.last_seen)
        report = customer_report(state, now, scoring_config(settings))
    finally:
        await client.aclose()
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    return 0


async def _kpis(settings: Settings, window_days: int, as_json: bool) -> int:
    from streams.state.kpis import KpiSource, format_report
    from streams.state.redis_client import redis_of

    client = redis_of(settings)
    source = KpiSource(client, settings.namespace, settings.partitions, settings.clock)
    try:
        report = await source.report(window_days)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        await client.aclose()
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
