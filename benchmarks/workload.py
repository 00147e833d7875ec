"""The synthetic workloads: the simulator replay read by every throughput variant, the
detractor stream of the latency test, and realistic customer states (scored by
scoring.engine) for the memory and sweep measurements."""

from __future__ import annotations

import base64
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scoring import codec
from scoring.config import ScoringConfig
from scoring.engine import apply_event, evaluate_due
from scoring.state import CustomerState
from streams.dev.simulator import SimEvent, encode, generate, summary
from streams.pipeline.intake import Decoder, Record, shard_of
from streams.pipeline.processor import AlertTopics, Scorer
from streams.state.store import ShardWrite, StateStore, offset_field

START = datetime(2026, 1, 5, tzinfo=UTC)


def replay(customers: int, days: float, seed: int) -> list[SimEvent]:
    """The throughput workload: ``customers`` simulated customers over ``days`` days.
    Over a short period most customers have not started yet and personas differ in
    activity, so a few customers send many events and most send few or none."""
    return generate(customers, days, seed, START)


def describe(events: Sequence[SimEvent], customers: int, days: float, seed: int) -> dict[str, Any]:
    per_customer = sorted(Counter(e.customer_id for e in events).values(), reverse=True)
    top = max(1, len(per_customer) // 100)
    counts = summary(events)
    return {
        "generator": (
            f"streams.dev.simulator.generate({customers}, {days}, {seed}, {START:%Y-%m-%d})"
        ),
        "events": len(events),
        "customers_simulated": customers,
        "customers_with_events": len(per_customer),
        "events_per_active_customer": {
            "median": statistics.median(per_customer) if per_customer else 0,
            "p99": per_customer[len(per_customer) // 100] if per_customer else 0,
            "max": per_customer[0] if per_customer else 0,
        },
        "share_of_events_from_top_1pct_customers": round(
            sum(per_customer[:top]) / max(1, len(events)), 3
        ),
        "by_source": {k.split(":")[1]: v for k, v in counts.items() if k.startswith("source:")},
        "mean_value_bytes": round(statistics.mean(len(encode(e)) for e in events[:20_000]), 1)
        if events
        else 0,
    }


def customer_states(customers: int, days: float, seed: int, config: ScoringConfig) -> list[bytes]:
    """Final states of simulated customers after ``days`` of history, scored event by
    event on the event clock as the worker does, then swept to the end of the period."""
    decoder = Decoder("clickstream", "purchases", "feedback")
    states: dict[str, CustomerState] = {}
    for i, e in enumerate(generate(customers, days, seed, START)):
        event = decoder.decode(Record(e.source, 0, i, None, encode(e), {}))
        t = event.occurred_at.timestamp()
        states[e.customer_id] = apply_event(states.get(e.customer_id), event, t, t, config).state
    end = (START + timedelta(days=days)).timestamp()
    return [codec.encode(evaluate_due(s, end, end, config).state) for s in states.values()]


def write_templates(path: Path, blobs: Iterable[bytes]) -> None:
    # States are binary (scoring.codec) and may contain newlines: one base64 line each.
    path.write_bytes(b"\n".join(base64.b64encode(b) for b in blobs))


def read_templates(path: Path) -> list[CustomerState]:
    lines = path.read_bytes().splitlines()
    return [codec.decode(base64.b64decode(line)) for line in lines if line]


def customer_id(n: int) -> str:
    return f"c{n:07d}"


def clones(templates: Sequence[CustomerState], count: int) -> Iterator[CustomerState]:
    """``count`` customers whose states repeat the templates' under new ids."""
    for n in range(count):
        yield replace(templates[n % len(templates)], customer_id=customer_id(n))


def due_at(state: CustomerState, at: float, new_id: str) -> CustomerState:
    """The same customer history moved in time so that its next check falls due at
    ``at`` (every stored time shifts; decayed sums are relative to the landmark)."""
    assert state.next_check_at is not None
    d = at - state.next_check_at
    return replace(
        state,
        customer_id=new_id,
        landmark=state.landmark + d,
        first_seen=state.first_seen + d,
        last_seen=state.last_seen + d,
        last_alert_at={k: v + d for k, v in state.last_alert_at.items()},
        next_check_at=at,
        evaluated_at=state.evaluated_at + d,
        recent_events={k: v + d for k, v in state.recent_events.items()},
    )


def due_clones(
    templates: Sequence[CustomerState], count: int, at: float
) -> Iterator[CustomerState]:
    scheduled = [t for t in templates if t.next_check_at is not None]
    for n in range(count):
        yield due_at(scheduled[n % len(scheduled)], at, customer_id(n))


async def write_states(
    store: StateStore, states: Iterable[CustomerState], shards: int, chunk: int = 8_000
) -> int:
    """Write states through StateStore.commit (states, due schedule, meta), ``chunk``
    customers per round trip; returns how many were written."""
    epochs = {s: view.epoch for s, view in (await store.metas(list(range(shards)))).items()}
    pending: dict[int, dict[str, CustomerState]] = {}
    buffered = written = 0

    async def flush() -> None:
        writes = [
            ShardWrite(
                shard=s,
                expected_epoch=epochs[s],
                states=batch,
                offsets={offset_field("bench.clickstream", s): written + buffered},
            )
            for s, batch in pending.items()
        ]
        for shard, ids in (await store.commit(writes)).items():
            if ids is None:
                raise RuntimeError(f"shard {shard} changed while the benchmark wrote it")
            epochs[shard] = str(int(epochs[shard]) + 1)
        pending.clear()

    for state in states:
        pending.setdefault(shard_of(state.customer_id, shards), {})[state.customer_id] = state
        buffered += 1
        if buffered >= chunk:
            await flush()
            written, buffered = written + buffered, 0
    if pending:
        await flush()
    return written + buffered


def sweeping_scorer(store: StateStore, config: ScoringConfig, shards: int, at: float) -> Scorer:
    """A Scorer on the wall clock stopped at ``at``, to sweep ``store`` with. A sweep reads
    no record and the benchmarks publish nothing: the topic names are placeholders."""
    return Scorer(
        store,
        Decoder("clickstream", "purchases", "feedback"),
        {"clickstream", "purchases", "feedback"},
        config,
        AlertTopics("churn", "interventions"),
        shards=shards,
        clock="wall",
        wall=lambda: at,
    )


async def sweep_all(scorer: Scorer, shards: Sequence[int], page: int) -> tuple[int, int]:
    """``Scorer.sweep`` of ``shards`` as the worker's sweep timer calls it, until no shard
    has a full page left: (alerts written, calls)."""
    alerts = calls = 0
    while True:
        entries, swept = await scorer.sweep(shards, page)
        alerts += len(entries)
        calls += 1
        if swept < page:
            return alerts, calls


async def still_due(store: StateStore, shards: Iterable[int], at: float) -> int:
    """How many customers of ``shards`` have a check due at ``at`` or before."""
    return sum([int(await store.client.zcount(store.keys(s).due, "-inf", at)) for s in shards])
