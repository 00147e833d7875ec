"""A scorer worker whose Faust consumer waits at most BENCH_FETCH_MAX_WAIT_MS (default 10)
for a fetch, instead of the 1500 ms faust.transport.drivers.aiokafka hard-codes:

    BENCH_FETCH_MAX_WAIT_MS=10 python -m benchmarks.patched_worker [--loglevel warn]

An experiment of the latency benchmark, not a fix: Tansu answers a fetch only when its
wait is up, even if records arrived meanwhile, so 1500 ms there means up to ~750 ms of
latency. The worker is otherwise `python -m streams.cli worker`, unchanged.
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

if __name__ == "__main__":
    raise SystemExit(main(["worker", *sys.argv[1:]]))
