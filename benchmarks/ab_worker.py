"""The full worker (Kafka, Faust, Redis) of this tree against another checkout's, on the
same broker, Redis and workload, interleaved:

    python -m benchmarks.ab_worker --tree /tmp/ab-base [--repeats 4] [--smoke]

Each repeat publishes the throughput workload of `benchmarks.run` to fresh input topics
and times one `streams.cli worker` of each tree on them (`benchmarks.sections.scorer_run`:
from assignment to the last scored event), in the order A, B on even repeats and B, A on
odd ones. Prints each run and the median of the per-repeat ratios (this tree / the
other): on a noisy host the pairs, run minutes apart, are what compares. The other tree
runs from its own directory with this virtualenv; compile its scoring core first
(`python scripts/compile_scoring.py` there) or it runs as plain Python.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import procs, sections, workload
from benchmarks.procs import Procs, service_pids
from streams.dev.services import embedded_services
from streams.dev.simulator import SimEvent, publish
from streams.kafka.topics import ensure_topics
from streams.settings import Settings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab_worker", description=__doc__)
    parser.add_argument("--tree", type=Path, required=True, help="the other checkout")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="the smoke plan's tiny workload")
    return parser.parse_args(argv)


async def _publish(events: list[SimEvent], settings: Settings) -> None:
    await ensure_topics(settings)
    await publish(events, settings)


def compare(tree: Path, repeats: int, smoke: bool) -> dict[str, Any]:
    plan = sections.Plan.smoke_plan() if smoke else sections.Plan.full()
    plan = replace(plan, repeats=repeats)
    events = workload.replay(plan.customers, plan.days, plan.seed)
    run_dir = Path(tempfile.mkdtemp(prefix="engagement-ab-worker-"))
    (run_dir / "logs").mkdir()
    runs: dict[str, list[float]] = {"this": [], "other": []}
    with (
        embedded_services(run_dir / "services") as endpoints,
        Procs(run_dir / "logs", wait_on_stop=not smoke) as running,
    ):
        ctx = sections.Context(
            plan=plan,
            endpoints=endpoints,
            procs=running,
            run_dir=run_dir,
            token=f"w{uuid.uuid4().hex[:6]}",
            service_pids=service_pids(endpoints, run_dir / "services" / "kafka"),
            events=events,
            templates=[],
            templates_path=run_dir / "templates.jsonl",
        )
        for rep in range(repeats):
            inputs = f"{ctx.token}r{rep}"
            sections.empty_redis(ctx)
            asyncio.run(_publish(events, sections.settings_of(ctx.env(inputs, inputs, inputs))))
            order = [("this", procs.REPO), ("other", tree.resolve())]
            for name, root in order if rep % 2 == 0 else order[::-1]:
                with running.started_in(root):
                    result = sections.scorer_run(ctx, f"{inputs}-{name}", inputs, 1, len(events))
                runs[name].append(result["events_per_s"])
                print(f"repeat {rep + 1} {name:5}: {result['events_per_s']:>9,.0f} events/s")
    ratios = [a / b for a, b in zip(runs["this"], runs["other"], strict=True)]
    return {
        "this": statistics.median(runs["this"]),
        "other": statistics.median(runs["other"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    out = compare(args.tree, args.repeats, args.smoke)
    spread = ", ".join(f"{r:.3f}" for r in out["ratios"])
    print(f"median this : {out['this']:>9,.0f} events/s")
    print(f"median other: {out['other']:>9,.0f} events/s")
    print(f"this / other, median of the per-repeat ratios: {out['ratio']:.3f} ({spread})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
