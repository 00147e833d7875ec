"""Worker memory over a long run: one worker scores a large backlog while its resident
set size is sampled; prints the series and a summary (for RELIABILITY.md).

    CHAOS_SERVICES=embedded .venv/bin/python tests/chaos/soak.py --customers 6000 --days 30

Not a test (no pass/fail on a measured figure): it reports what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "integration"), str(HERE)]

from driver import FULL, Run  # noqa: E402
from services import Broker, RedisServer  # noqa: E402
from workload import Truth, build  # noqa: E402

from scoring.config import load_config  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=6000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--sample-s", type=float, default=5)
    parser.add_argument("--real", action="store_true", help="Apache Kafka + redis-server")
    args = parser.parse_args()
    asyncio.run(soak(args.customers, args.days, args.sample_s, args.real))


if __name__ == "__main__":
    main()
