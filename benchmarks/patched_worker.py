"""`python -m streams.cli worker`, unchanged, with instruments for the latency experiments:

    BENCH_PHASES_OUT=FILE python -m benchmarks.patched_worker [--loglevel warn]

(Its fetch wait is the worker's own setting, ENGAGEMENT_FETCH_MAX_WAIT_MS: a patch of
Faust's driver here would be overridden by it.)

With BENCH_PHASES_OUT=FILE it times the steps of each batch (Scorer.process,
StateStore.read/commit/delete_outbox, Publisher.publish, Runtime.finish) and writes the
totals to FILE every second.

With BENCH_TRACE_OUT=FILE it appends a JSON line per record key (the latency section's
customers are one per alerting event) once its alert was delivered: the event's append
stamp, when the batch reader got it, its batch's start and end, and its delivery round's
start and end (where an alert's latency goes: BENCHMARKS.md).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from streams.cli import main


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


def _trace_alerts(out: str) -> None:
    """With BENCH_TRACE_OUT set: per alerting customer, when its event was appended (the
    broker's stamp), handed to the batch reader, scored (its batch's start and end), and
    when the delivery round carrying its alert started and ended; written as JSON lines to
    that file every second (an experiment to find where an alert's latency goes)."""
    import functools
    import json
    import threading
    import time

    from streams.app import Runtime
    from streams.batches import BatchReader
    from streams.delivery import AlertDelivery

    by_key: dict[bytes, dict[str, float]] = {}

    put = BatchReader.put

    @functools.wraps(put)
    async def traced_put(self: Any, messages: list[tuple[Any, int]]) -> None:
        now = time.time()
        for m, _ in messages:
            if m.key is not None:
                by_key[m.key] = {"append": m.timestamp, "put": now, "pending": len(self.pending)}
        await put(self, messages)

    score = Runtime.score

    @functools.wraps(score)
    async def traced_score(self: Any, messages: Any, tokens: Any) -> None:
        started = time.time()
        try:
            await score(self, messages, tokens)
        finally:
            ended = time.time()
            for m in messages:
                t = by_key.get(m.key)
                if t is not None:
                    t.update(start=started, end=ended, size=len(messages))

    send_round = AlertDelivery._send_round

    @functools.wraps(send_round)
    async def traced_round(self: Any) -> None:
        batch = self.queue[: self.max_per_send]
        started = time.time()
        await send_round(self)
        ended = time.time()
        for e in batch:
            t = by_key.get(e.key)
            if t is not None:
                t.update(round_start=started, round_end=ended, round_size=len(batch))

    BatchReader.put = traced_put  # type: ignore[method-assign]
    Runtime.score = traced_score  # type: ignore[method-assign]
    AlertDelivery._send_round = traced_round  # type: ignore[method-assign]

    def dump() -> None:
        while True:
            time.sleep(1.0)
            # list(): one call, so the event loop's thread cannot resize the dict under it
            done = [(k, v) for k, v in list(by_key.items()) if "round_end" in v]
            with open(out, "a") as handle:
                for k, v in done:
                    handle.write(json.dumps({"key": k.decode(), **v}) + "\n")
                    by_key.pop(k, None)

    threading.Thread(target=dump, daemon=True).start()


if os.environ.get("BENCH_TRACE_OUT"):
    _trace_alerts(os.environ["BENCH_TRACE_OUT"])

if os.environ.get("BENCH_PHASES_OUT"):
    _time_phases(os.environ["BENCH_PHASES_OUT"])

if __name__ == "__main__":
    raise SystemExit(main(["worker", *sys.argv[1:]]))
