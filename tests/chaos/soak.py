"""Worker memory over a long run, sampled from /proc while one worker scores; prints the
series and a summary (for RELIABILITY.md). Two modes:

    # a backlog published first, scored as fast as the worker can
    CHAOS_SERVICES=embedded .venv/bin/python tests/chaos/soak.py --customers 6000 --days 30
    # live input at a fixed rate for an hour: the same customers month after month
    .venv/bin/python tests/chaos/soak.py --real --live-minutes 60 --rate 1000 \
        --out .engagement/soak-live.json

Not a test (no pass/fail on a measured figure): it reports what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "integration"), str(HERE)]

import orjson  # noqa: E402
from driver import FULL, Run  # noqa: E402
from services import Broker, RedisServer  # noqa: E402
from workload import START, Truth, Workload, build  # noqa: E402

from scoring.config import load_config  # noqa: E402
from streams.dev.simulator import generate, publish  # noqa: E402


async def soak(customers: int, days: float, sample_s: float, real: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    redis = RedisServer.choose(workdir / "redis", real=real)
    broker = Broker(apache=real, workdir=workdir / "broker")
    broker.workdir.mkdir(parents=True)
    workload = build(customers, days, 0, FULL.partitions, seed=2)
    print(f"workload: {len(workload.valid)} events of {workload.customers} customers")
    redis.start()
    broker.start()
    try:
        run = Run(FULL, redis, broker, workload, Truth(), load_config(None), workdir, "soak")
        await run.create_topics()
        await run.publish()
        run.fleet.start("w1")
        started = time.monotonic()
        samples: list[tuple[float, float, int]] = []
        while True:
            done = await run.progress()
            rss = run.fleet.rss_mib().get("w1", 0.0)
            samples.append((time.monotonic() - started, rss, done))
            print(f"{samples[-1][0]:7.1f}s  rss {rss:7.1f} MiB  applied {done}", flush=True)
            if done >= run.total:
                break
            await asyncio.sleep(sample_s)
        took = samples[-1][0]
        rates = f"{run.total / took:,.0f} records/s" if took else "?"
        sizes = [s for _, s, _ in samples if s]
        print(f"done: {run.total} records in {took:.0f}s ({rates}); RSS min {min(sizes):.0f}, "
              f"max {max(sizes):.0f}, last {sizes[-1]:.0f} MiB")  # fmt: skip
        run.fleet.stop_all()
    finally:
        broker.stop()
        redis.stop()


async def live_soak(
    customers: int, minutes: float, rate: float, sample_s: float, real: bool, out: Path | None
) -> None:
    """Publish month after month of the same customers at ``rate`` events/s for ``minutes``
    while one worker keeps up; sample its RSS throughout."""
    workdir = Path(tempfile.mkdtemp(prefix="soak-live-"))
    redis = RedisServer.choose(workdir / "redis", real=real)
    broker = Broker(apache=real, workdir=workdir / "broker")
    broker.workdir.mkdir(parents=True)
    redis.start()
    broker.start()
    round_days = 30.0
    published = 0
    samples: list[tuple[float, float, int, int]] = []  # (s, RSS MiB, applied, published)
    run: Run | None = None
    try:
        empty = Workload([], [], customers, FULL.partitions)
        run = Run(FULL, redis, broker, empty, Truth(), load_config(None), workdir, "soak")
        await run.create_topics()
        run.fleet.start("w1")
        started = time.monotonic()
        deadline = started + minutes * 60

        async def feed() -> None:
            nonlocal published
            month = 0
            while time.monotonic() < deadline:
                start = START + timedelta(days=round_days * month)
                events = generate(customers, round_days, month, start)
                left = deadline - time.monotonic()
                events = events[: max(0, int(left * rate))]
                before = published

                def count(n: int, before: int = before) -> None:
                    nonlocal published
                    published = before + n

                await publish(events, run.settings, rate=rate, on_progress=count)
                month += 1

        feeder = asyncio.create_task(feed())
        while True:
            # A busy machine may time a probe out: keep the last figure, sample again.
            done = await run._safe(run.progress, samples[-1][2] if samples else 0)
            rss = run.fleet.rss_mib().get("w1", 0.0)
            samples.append((time.monotonic() - started, rss, done, published))
            print(f"{samples[-1][0]:7.1f}s  rss {rss:7.1f} MiB  applied {done:>9}  "
                  f"published {published:>9}", flush=True)  # fmt: skip
            if feeder.done() and done >= published:
                break
            await asyncio.sleep(sample_s)
        await feeder
    finally:
        if run is not None:
            run.fleet.stop_all()
        broker.stop()
        redis.stop()
    summary = _summary(samples, minutes, rate, customers)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps({**summary, "samples": samples}))


def _summary(
    samples: list[tuple[float, float, int, int]], minutes: float, rate: float, customers: int
) -> dict[str, object]:
    sizes = [(t, rss) for t, rss, _, _ in samples if rss]
    took = samples[-1][0]
    second_half = [(t, rss) for t, rss in sizes if t >= took / 2]
    (t0, r0), (t1, r1) = second_half[0], second_half[-1]
    return {
        "minutes": minutes,
        "rate": rate,
        "customers": customers,
        "events": samples[-1][2],
        "took_s": round(took, 1),
        "rss_mib": {
            "at_5_min": next((r for t, r in sizes if t >= 300), sizes[-1][1]),
            "min": min(r for _, r in sizes),
            "max": max(r for _, r in sizes),
            "last": sizes[-1][1],
            # Growth over the second half of the run, per hour: ~0 when memory is bounded.
            "second_half_mib_per_hour": round((r1 - r0) / max(t1 - t0, 1) * 3600, 1),
        },
        "max_lag_records": max(p - a for _, _, a, p in samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=6000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--sample-s", type=float, default=5)
    parser.add_argument("--real", action="store_true", help="Apache Kafka + redis-server")
    parser.add_argument("--live-minutes", type=float, help="live input for this long")
    parser.add_argument("--rate", type=float, default=1000, help="live input, events/s")
    parser.add_argument("--out", type=Path, help="live mode: write the samples here (JSON)")
    args = parser.parse_args()
    if args.live_minutes:
        asyncio.run(
            live_soak(
                args.customers, args.live_minutes, args.rate, args.sample_s, args.real, args.out
            )
        )
    else:
        asyncio.run(soak(args.customers, args.days, args.sample_s, args.real))


if __name__ == "__main__":
    main()
