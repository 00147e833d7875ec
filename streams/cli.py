"""The `engagement` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

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

    demo = sub.add_parser("demo", help="embedded services, a worker and a simulator")
    demo.add_argument("--customers", type=int, default=300)
    demo.add_argument("--days", type=float, default=90.0)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--seconds", type=float, default=60.0)

    args = parser.parse_args(argv)
    try:
        if args.command == "services":
            from streams.services import cmd_services

            return cmd_services(args.action, args.state_dir)
        if args.command == "demo":
            from streams.demo import run_demo

            return run_demo(args.customers, args.days, args.seed, args.seconds)
        settings = load_settings()
        if args.command == "worker":
            return run_worker(settings, args.loglevel)
        if args.command == "simulate":
            return asyncio.run(_simulate(settings, args))
        if args.command == "customer":
            return asyncio.run(_customer(settings, args.customer_id, args.json))
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def run_worker(settings: Settings, loglevel: str) -> int:
    import faust

    from scoring.config import load_config
    from streams.app import create_app
    from streams.topics import ensure_topics

    config = load_config(settings.scoring_config)
    aligned = asyncio.run(ensure_topics(settings))
    asyncio.set_event_loop(asyncio.new_event_loop())
    runtime = create_app(settings, config, aligned)
    worker = faust.Worker(runtime.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
    return 0


async def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from streams.simulator import generate, publish
    from streams.topics import ensure_topics

    # Create the topics with the right partition count before a broker auto-creates them
    # with its own default (every record would then be rerouted).
    await ensure_topics(settings)
    start = datetime.now(tz=UTC) - timedelta(days=args.days)
    events = generate(args.customers, args.days, args.seed, start)
    sent = await publish(events, settings, rate=args.rate)
    print(f"published {sent} events for {args.customers} customers")
    return 0


async def _customer(settings: Settings, customer_id: str, as_json: bool) -> int:
    from scoring.config import load_config
    from streams.intake import shard_of
    from streams.report import customer_report
    from streams.store import StateStore, connect_redis

    client = connect_redis(
        settings.redis_url.get_secret_value(),
        cluster=settings.redis_cluster,
        timeout_s=settings.redis_timeout_s,
    )
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
        report = customer_report(state, now, load_config(settings.scoring_config))
    finally:
        await client.aclose()
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for name, value in report.items():
            print(f"{name:>20}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
