"""The scorer's own cost per event, in-process (no Kafka, no Redis, no Faust):

    python -m benchmarks.engine_cost [--customers 370] [--days 90] [--seed 1] [--runs 5]
                                     [--events FILE] [--save-events FILE]

Simulated events (``streams.dev.simulator.generate``, ~50k with the defaults) are decoded
once, up front; each run then folds all of them with ``scoring.engine.apply_event`` on
the event clock, as the worker does, starting from empty states. Prints the median over
the runs of the CPU microseconds per event (process time: wall time swings on a shared
host) of apply_event alone, and of the whole per-batch cycle of the processor: in
batches of ``--batch`` events, each customer the batch touches
is decoded (``CustomerState.from_bytes``), its events applied, and encoded back
(``to_bytes``) once.

``--save-events`` writes the decoded stream as JSON lines and ``--events`` reads such a
file instead of generating, so two versions of the scorer (or of the simulator) can be
compared on exactly the same events.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from schemas.events import InputEvent
from scoring import codec
from scoring.config import load_config
from scoring.engine import apply_event
from scoring.state import CustomerState
from streams.dev.simulator import encode, generate
from streams.pipeline.intake import Decoder, Record

START = datetime(2026, 1, 5, tzinfo=UTC)
_DECODER = Decoder("clickstream", "purchases", "feedback")


def simulated(customers: int, days: float, seed: int) -> list[tuple[str, bytes]]:
    return [(e.source, encode(e)) for e in generate(customers, days, seed, START)]


def decoded(raw: list[tuple[str, bytes]]) -> list[InputEvent]:
    return [_DECODER.decode(Record(s, 0, i, None, v, {})) for i, (s, v) in enumerate(raw)]


def one_run(events: list[InputEvent]) -> float:
    """Seconds in apply_event, states kept in memory."""
    config = load_config()
    states: dict[str, CustomerState] = {}
    gc.collect()
    began = time.process_time()
    for event in events:
        t = event.occurred_at.timestamp()
        cid = event.customer_id
        states[cid] = apply_event(states.get(cid), event, t, t, config).state
    return time.process_time() - began


def one_batched_run(events: list[InputEvent], batch: int) -> float:
    """Seconds for decode + apply + encode, batch by batch, states kept as bytes."""
    config = load_config()
    stored: dict[str, bytes] = {}
    gc.collect()
    began = time.process_time()
    for lo in range(0, len(events), batch):
        chunk = events[lo : lo + batch]
        states: dict[str, CustomerState | None] = {}
        for cid in {e.customer_id for e in chunk}:
            raw = stored.get(cid)
            states[cid] = None if raw is None else codec.decode(raw)
        for event in chunk:
            t = event.occurred_at.timestamp()
            cid = event.customer_id
            states[cid] = apply_event(states[cid], event, t, t, config).state
        for cid, state in states.items():
            assert state is not None
            stored[cid] = codec.encode(state)
    return time.process_time() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=370)
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--events", type=Path, help="JSON lines [source, value] to replay")
    parser.add_argument("--save-events", type=Path, help="write the generated events here")
    args = parser.parse_args()
    if args.events is not None:
        raw = [
            (str(s), str(v).encode())
            for s, v in map(orjson.loads, args.events.read_bytes().splitlines())
        ]
    else:
        raw = simulated(args.customers, args.days, args.seed)
    if args.save_events is not None:
        args.save_events.write_bytes(b"\n".join(orjson.dumps([s, v.decode()]) for s, v in raw))
    events = decoded(raw)
    n = len(events)
    apply_us = statistics.median(one_run(events) for _ in range(args.runs)) / n * 1e6
    cycle_us = (
        statistics.median(one_batched_run(events, args.batch) for _ in range(args.runs)) / n * 1e6
    )
    print(f"events: {n}, customers: {len({e.customer_id for e in events})}, runs: {args.runs}")
    print(f"apply_event:                           {apply_us:.1f} us/event (median)")
    print(f"decode + apply + encode per {args.batch} batch: {cycle_us:.1f} us/event (median)")


if __name__ == "__main__":
    main()
