"""A scorer worker whose Faust consumer waits at most BENCH_FETCH_MAX_WAIT_MS (default 10)
for a fetch, instead of the 1500 ms faust.transport.drivers.aiokafka hard-codes:

    BENCH_FETCH_MAX_WAIT_MS=10 python -m benchmarks.patched_worker [--loglevel warn]

An experiment of the latency benchmark, not a fix: Tansu answers a fetch only when its
wait is up, even if records arrived meanwhile, so 1500 ms there means up to ~750 ms of
latency. The worker is otherwise `python -m streams.cli worker`, unchanged.

With BENCH_PHASES_OUT=FILE it also times the steps of each batch (Scorer.process,
StateStore.read/commit/delete_outbox, Publisher.publish, Runtime.finish) and writes the
totals to FILE every second.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import faust.transport.drivers.aiokafka as driver

from streams.cli import main

_create = driver.AIOKafkaConsumerThread._create_worker_consumer


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _create(self, transport)
    consumer._fetch_max_wait_ms = int(os.environ.get("BENCH_FETCH_MAX_WAIT_MS", "10"))
    return consumer


driver.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


def _time_phases(out: str) -> None:
    """With BENCH_PHASES_OUT set: wall time spent in each step of a batch, written as JSON
    to that file every second (an experiment to find where a batch's time goes)."""
    import functools
    import json
    import threading
    import time

    from streams.app import Runtime
    from streams.processor import Scorer
    from streams.publisher import Publisher
    from streams.store import StateStore

    totals: dict[str, list[float]] = {}

    def timed(cls: Any, name: str) -> None:
        original = getattr(cls, name)

        @functools.wraps(original)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                entry = totals.setdefault(f"{cls.__name__}.{name}", [0.0, 0])
                entry[0] += time.perf_counter() - started
                entry[1] += 1

        setattr(cls, name, wrapper)

    for cls, name in ((Scorer, "process"), (StateStore, "read"), (StateStore, "commit"),
                      (StateStore, "delete_outbox"), (Publisher, "publish"),
                      (Runtime, "finish")):  # fmt: skip
        timed(cls, name)

    def dump() -> None:
        while True:
            time.sleep(1.0)
            with open(out, "w") as handle:
                json.dump(totals, handle)

    threading.Thread(target=dump, daemon=True).start()


if os.environ.get("BENCH_PHASES_OUT"):
    _time_phases(os.environ["BENCH_PHASES_OUT"])

if __name__ == "__main__":
    raise SystemExit(main(["worker", *sys.argv[1:]]))
