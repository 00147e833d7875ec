"""What-if measurements behind the proposals in BENCHMARKS.md (not part of benchmarks.run):

    python -m benchmarks.experiments [--customers 100000]

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.sections import _used_memory, flushdb
from benchmarks.workload import START, clones, customer_id, customer_states
from scoring.config import load_config
from scoring.state import CustomerState
from streams.intake import shard_of
from streams.services import embedded_services
from streams.store import ShardKeys, connect_redis

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    templates = [
        CustomerState.from_bytes(b) for b in customer_states(1_000, 60.0, 1, load_config(None))
    ]
    states = list(clones(templates, args.customers))
    assert states[0].customer_id == customer_id(0)
    results: dict[str, Any] = {"customers": args.customers, "templates_from": str(START.date())}
    with (
        tempfile.TemporaryDirectory(prefix="engagement-exp-") as tmp,
        embedded_services(Path(tmp)) as endpoints,
    ):
        for name, encode in (("current", CustomerState.to_bytes), ("compact", compact)):
            results[name] = asyncio.run(_write(endpoints.redis_url, states, encode, 8))
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
