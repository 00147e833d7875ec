"""What-if measurements behind the proposals in BENCHMARKS.md (not part of benchmarks.run):

    python -m benchmarks.experiments [memory] [fetch] [held] [fetches] [phases]
        [--customers 100000]
        [--services embedded|apache] [--out FILE]

``fetch``: how long a record waits for a plain aiokafka consumer (no Faust, no scorer)
against the embedded broker, by the consumer's ``fetch_max_wait_ms``: 400 records at
200/s to an 8-partition topic, latency = receive time - record timestamp, and the same
gathering 10 ms (fetch_min_bytes 1 MB). Faust's worker consumer uses 1,500 ms (hard-coded in
faust.transport.drivers.aiokafka).

``held``: when the broker answers a fetch into whose wait a record is produced (Tansu looks
for records only at some points of the wait; Apache Kafka answers as the record arrives).

``phases``: where a batch's time goes at 1,000 alert-raising events/s, with the fetch
wait at 10 ms (ENGAGEMENT_FETCH_MAX_WAIT_MS) and ENGAGEMENT_BATCH_WITHIN_S 0.005 and
0.05: mean wall time per call of Scorer.process, StateStore.read/commit/delete_outbox,
Publisher.publish and Runtime.finish (BENCH_PHASES_OUT), with the latency percentiles.

``fetches``: what a light input costs a plain aiokafka consumer in fetches, by the
partitions it is assigned and its fetch bounds (benchmarks/fetches.py).

``memory``: the customers of the memory benchmark (the same state templates, cloned),
written the way the commit script writes them (SET of the state + ZADD to the shard's due
zset) in two encodings, each into an empty embedded Valkey:

- ``current``: CustomerState.to_bytes(), the JSON the scorer stores today;
- ``compact``: a proposal: no customer id (it is in the key), times as integer
  milliseconds from the landmark, decayed sums to 7 significant digits, churn risk to 4
  decimals, one-letter feature and count names, 12-hex event digests (48 bits), and
  fields at their default value left out.

Reports used_memory per customer, MEMORY USAGE of sampled state keys and the mean blob
size of each. Nothing here changes the scorer; decoding the compact form is not written.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.fetches import fetch_costs
from benchmarks.real_services import apache_services
from benchmarks.sections import _used_memory, flushdb
from benchmarks.workload import START, clones, customer_id, customer_states
from scoring.config import load_config
from scoring.state import CustomerState
from streams.intake import shard_of
from streams.redis_client import connect_redis
from streams.services import embedded_services
from streams.store import ShardKeys
from streams.topics import create_topics

SHORT = {
    "eng": "e", "short": "s", "long": "l", "bad": "b",
    "events": "e", "orders": "o", "feedback": "f", "bad_experiences": "b", "returns": "r",
    "refunds": "R", "cancellations": "c",
    "churn_risk": "c", "bad_experience": "b", "detractor_feedback": "d", "low_csat": "l",
    "negative_review": "n", "product_return": "r", "negative_sentiment": "s",
}  # fmt: skip


def compact(state: CustomerState) -> bytes:
    base = state.landmark

    def ms(t: float) -> int:
        return round((t - base) * 1000)

    d: dict[str, Any] = {
        "L": int(base) if float(base).is_integer() else base,
        "d": {SHORT.get(k, k): float(f"{v:.7g}") for k, v in state.decayed.items()},
        "n": {SHORT.get(k, k): v for k, v in state.counts.items()},
        "f": ms(state.first_seen),
        "l": ms(state.last_seen),
        "e": ms(state.evaluated_at),
        "r": round(state.churn_risk, 4),
    }
    if state.churn_level:
        d["v"] = state.churn_level
    if state.churn_alerts:
        d["a"] = state.churn_alerts
    if state.last_alert_at:
        d["t"] = {SHORT.get(k, k): ms(v) for k, v in state.last_alert_at.items()}
    if state.next_check_at is not None:
        d["x"] = ms(state.next_check_at)
    if not state.check_exact:
        d["k"] = 0
    if state.recent_events:
        d["i"] = {k[:12]: ms(v) for k, v in state.recent_events.items()}
    return orjson.dumps(d)


async def _write(
    url: str, states: list[CustomerState], encode: Callable[[CustomerState], bytes], shards: int
) -> dict[str, float]:
    client = connect_redis(url)
    try:
        await flushdb(client)
        await client.execute_command("MEMORY", "PURGE")
        before = await _used_memory(client)
        for lo in range(0, len(states), 5_000):
            pipe = client.pipeline(transaction=False)
            for s in states[lo : lo + 5_000]:
                keys = ShardKeys("eng", shard_of(s.customer_id, shards))
                pipe.set(keys.customer(s.customer_id), encode(s))
                if s.next_check_at is not None:
                    pipe.zadd(keys.due, {s.customer_id: s.next_check_at})
            await pipe.execute()
        after = await _used_memory(client)
        sample = random.Random(7).sample(states, min(1_000, len(states)))
        pipe = client.pipeline(transaction=False)
        for s in sample:
            keys = ShardKeys("eng", shard_of(s.customer_id, shards))
            pipe.memory_usage(keys.customer(s.customer_id))
        usage = await pipe.execute()
        await flushdb(client)
    finally:
        await client.aclose()
    return {
        "bytes_per_customer": round((after - before) / len(states), 1),
        "memory_usage_state_key_mean": round(statistics.fmean(usage), 1),
        "blob_bytes_mean": round(statistics.fmean(len(encode(s)) for s in sample), 1),
    }


# (fetch_max_wait_ms, fetch_min_bytes): answered at the first record, and gathering 10 ms
FETCH_BOUNDS = ((10, 1), (20, 1), (100, 1), (500, 1), (1500, 1), (10, 1_000_000))


async def _fetch_latency(bootstrap: str) -> dict[str, dict[str, float]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    await create_topics(bootstrap, ["fetch-wait"], 8)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    out: dict[str, dict[str, float]] = {}
    try:
        for wait_ms, min_bytes in FETCH_BOUNDS:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap,
                enable_auto_commit=False,
                fetch_max_wait_ms=wait_ms,
                fetch_min_bytes=min_bytes,
            )
            await consumer.start()
            tps = [TopicPartition("fetch-wait", p) for p in range(8)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            latencies: list[float] = []

            async def read(n: int, consumer: Any = consumer, seen: list[float] = latencies) -> None:
                while len(seen) < n:
                    batches = await consumer.getmany(timeout_ms=100)
                    now = time.time() * 1000
                    seen.extend(now - r.timestamp for rs in batches.values() for r in rs)

            reader = asyncio.create_task(read(400))
            await asyncio.sleep(0.5)
            for i in range(400):
                await producer.send("fetch-wait", b"x" * 200, key=str(i).encode())
                await asyncio.sleep(1 / 200)
            await asyncio.wait_for(reader, 30)
            await consumer.stop()
            latencies.sort()
            gathering = f", fetch_min_bytes={min_bytes}" if min_bytes > 1 else ""
            out[f"fetch_max_wait_ms={wait_ms}{gathering}"] = {
                "p50_ms": round(latencies[len(latencies) // 2], 1),
                "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1),
                "max_ms": round(latencies[-1], 1),
            }
    finally:
        await producer.stop()
    return out


async def _held_fetch(
    bootstrap: str, waits: tuple[int, ...] = (40, 100, 300), rounds: int = 5
) -> dict[str, dict[str, float]]:
    """When a broker answers a fetch (fetch_min_bytes 1) into whose wait a record is
    produced, at a fifth and at three fifths of the wait: Apache Kafka as the record
    arrives; a broker that looks for records only at some points of the wait, at the next
    of them. Medians over ``rounds``, in ms from the fetch's send."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.protocol.fetch import FetchRequest
    from aiokafka.structs import TopicPartition

    topic = f"fetch-held-{time.time_ns()}"
    await create_topics(bootstrap, [topic], 1)
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    out: dict[str, dict[str, float]] = {}
    try:
        for wait_ms in waits:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=wait_ms
            )
            fetches: list[tuple[float, float | None]] = []  # (sent, answered), monotonic
            fetch_sent = asyncio.Event()
            send = consumer._client.send

            async def timed(node_id: int, request: Any, fetches: Any = fetches, send: Any = send,
                            sent: asyncio.Event = fetch_sent, **kwargs: Any) -> Any:  # fmt: skip
                if not isinstance(request, FetchRequest):
                    return await send(node_id, request, **kwargs)
                fetches.append((time.monotonic(), None))
                sent.set()
                i = len(fetches) - 1
                response = await send(node_id, request, **kwargs)
                fetches[i] = (fetches[i][0], time.monotonic())
                return response

            consumer._client.send = timed
            await consumer.start()
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            for into in (0.2, 0.6):
                produced, answered = [], []
                for _ in range(rounds):
                    fetch_sent.clear()
                    await fetch_sent.wait()  # the next fetch, empty so far
                    sent = fetches[-1][0]
                    await asyncio.sleep(max(0.0, sent + into * wait_ms / 1000 - time.monotonic()))
                    at = time.monotonic()
                    await producer.send_and_wait(topic, b"x")
                    while not await consumer.getmany(tp, timeout_ms=5000):
                        pass
                    # the fetch that brought it: the last one answered after the record went
                    start, done = max(
                        ((s, a) for s, a in fetches if a is not None and a >= at),
                        key=lambda fetch: fetch[1],
                    )
                    produced.append(1000 * (at - start))
                    answered.append(1000 * (done - start))
                out[f"fetch_max_wait_ms={wait_ms}, produced at {into:.0%} of the wait"] = {
                    "produced_ms": round(statistics.median(produced), 1),
                    "answered_ms": round(statistics.median(answered), 1),
                }
            await consumer.stop()
    finally:
        await producer.stop()
    return out


def _phases(endpoints: Any, run_dir: Path) -> dict[str, Any]:
    import json
    import time as clock
    from dataclasses import replace

    from benchmarks import latency, sections
    from benchmarks.procs import Procs, service_pids
    from streams.topics import ensure_topics

    (run_dir / "logs").mkdir(exist_ok=True)
    out: dict[str, Any] = {}
    with Procs(run_dir / "logs") as procs:
        plan = replace(sections.Plan.full(), latency=((1_000, 10.0),))
        ctx = sections.Context(
            plan, endpoints, procs, run_dir, "ph", service_pids(endpoints), [], [], run_dir
        )
        for within in ("0.005", "0.05"):
            name = f"phases{within.replace('.', '')}"
            timing = run_dir / f"{name}.json"
            env = ctx.env(name, name, name, ENGAGEMENT_CLOCK="wall",
                          ENGAGEMENT_BATCH_WITHIN_S=within, ENGAGEMENT_FETCH_MAX_WAIT_MS="10",
                          BENCH_PHASES_OUT=str(timing))  # fmt: skip
            settings = sections.settings_of(env)
            asyncio.run(ensure_topics(settings))
            worker = procs.worker(name, env, "benchmarks.patched_worker")
            try:
                while not worker.owned_shards():
                    worker.check("starting")
                    clock.sleep(0.1)
                phases = asyncio.run(latency.latency_phases(ctx, settings, name, worker))
                clock.sleep(1.5)  # the timings file is rewritten every second
                totals = json.loads(timing.read_text())
            finally:
                procs.stop([worker])
            phase = phases["1000"]
            out[f"batch_within_s={within}"] = {
                **{k: phase[k] for k in ("p50_ms", "p99_ms", "batch_mean_events", "batch_mean_ms")},
                "mean_ms_per_call (warm-up included)": {
                    k: round(1000 * t / n, 2) for k, (t, n) in sorted(totals.items()) if n
                },
                "calls": {k: n for k, (_, n) in sorted(totals.items())},
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments", description=__doc__)
    parser.add_argument(
        "which", nargs="*", help="fetch, held, fetches, phases, memory (default: all)"
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--services",
        choices=("embedded", "apache"),
        default="embedded",
        help="the embedded pair (Tansu + Valkey) or Apache Kafka + Redis",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    known = {"fetch", "held", "fetches", "phases", "memory"}
    which = set(args.which) or known
    if which - known:
        parser.error(f"unknown experiments: {', '.join(sorted(which - known))}")
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="engagement-exp-") as tmp,
        (apache_services if args.services == "apache" else embedded_services)(
            Path(tmp)
        ) as endpoints,
    ):
        results["services"] = args.services
        if "fetch" in which:
            results["fetch"] = asyncio.run(_fetch_latency(endpoints.kafka_bootstrap))
        if "held" in which:
            results["held"] = asyncio.run(_held_fetch(endpoints.kafka_bootstrap))
        if "fetches" in which:
            results["fetches"] = asyncio.run(fetch_costs(endpoints.kafka_bootstrap))
        if "phases" in which:
            results["phases"] = _phases(endpoints, Path(tmp))
        if "memory" in which:
            templates = [
                CustomerState.from_bytes(b)
                for b in customer_states(1_000, 60.0, 1, load_config(None))
            ]
            states = list(clones(templates, args.customers))
            assert states[0].customer_id == customer_id(0)
            memory: dict[str, Any] = {"customers": args.customers}
            memory["templates"] = f"1,000 customers over 60 days from {START.date()}"
            for name, encode in (("current", CustomerState.to_bytes), ("compact", compact)):
                memory[name] = asyncio.run(_write(endpoints.redis_url, states, encode, 8))
            results["memory"] = memory
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
