"""What Faust's per-event path costs, and a batch-level tap that avoids most of it.

    python -m benchmarks.faust_paths [--customers 100000] [--repeats 3] [--profile]
        [--candidates a,b] [--rebalance a,b] [--kill a,b] [--out FILE] [--keep DIR]

Starts the embedded broker and Redis, publishes the throughput workload once (input topics
of 8 partitions), and reads it with every candidate, each a do-nothing consumer built from
the App, topic and agent arguments of streams.app.create_app, as its own process and
consumer group, the candidates interleaved, ``--repeats`` times:

- ``agent``: the framework ceiling, noack_take + ``stream.ack`` per event (as the scorer);
- ``agent_big_buffers``: the same with broker_max_poll_records=5000 and
  stream_buffer_maxsize=32768;
- ``agent_no_cython``: the same with Faust's pure-Python StreamIterator (NO_CYTHON=1);
- ``tap_conductor``: the Conductor's per-partition handler replaced for the input topics:
  raw Messages are appended to a list (no Event, no queue, no Stream), whole lists go to
  one coroutine, acknowledged with ``consumer.ack(message)``;
- ``tap_drain``: the consumer's ``_drain_messages`` loop replaced, so each fetched batch is
  handed over at once (one ``wait_first`` per batch instead of per message).

Each run checks that every record was seen exactly once and that the group's committed
offsets reach the end offsets. ``--rebalance`` candidates are then read by two processes of
one group, the second joining mid-stream (``--kill``: and the first then SIGKILLed), with
processing slowed down; no record may be missing. ``--profile`` records ``agent``,
``tap_conductor`` and ``tap_drain`` with py-spy. Writes ``--out`` (default
benchmarks/results/faust-paths-<date>.json; the raw profiles next to it). Results and
analysis: benchmarks/results/faust-paths-2026-11-22.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.faust_tap import CANDIDATES, run_child
from benchmarks.procs import REPO, Proc, Procs, engagement_env, wait_result
from streams.services import free_port

RESULTS = REPO / "benchmarks" / "results"
PACKAGES = ("faust/", "mode/", "aiokafka/", "asyncio/", "benchmarks/")


# --- in the parent process ------------------------------------------------------------


class Bench:
    """The services, the published workload and the subprocesses of one run."""

    def __init__(self, procs: Procs, endpoints: Any, run_dir: Path, token: str) -> None:
        self.procs, self.endpoints, self.run_dir, self.token = procs, endpoints, run_dir, token
        self.expected = 0
        self.ends: dict[tuple[str, int], int] = {}
        self.bootstrap: str = endpoints.kafka_bootstrap
        self.listed_ends: dict[tuple[str, int], int] = {}

    def env(self, group: str, extra: dict[str, str]) -> dict[str, str]:
        env = engagement_env(
            self.endpoints,
            app_id=group,
            namespace=group,
            inputs=self.token,
            outputs=self.token,
            state_dir=self.run_dir / "state",
        )
        return {**env, **extra, "ENGAGEMENT_WEB_PORT": str(free_port())}

    def publish(self, customers: int) -> float:
        """Publish the workload; the end offsets are taken from the producer's record
        metadata (Tansu's ListOffsets answered less than that in a trial run)."""
        from aiokafka import AIOKafkaProducer

        from benchmarks.sections import settings_of
        from streams.simulator import encode, generate, topic_for
        from streams.topics import ensure_topics

        settings = settings_of(self.env("publisher", {}))
        events = generate(customers, 1.0, 1, datetime(2026, 1, 5, tzinfo=UTC))

        async def go() -> float:
            await ensure_topics(settings)
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            started = time.perf_counter()
            try:
                for lo in range(0, len(events), 2000):
                    sent = [
                        await producer.send(
                            topic_for(e, settings), encode(e), key=e.customer_id.encode()
                        )
                        for e in events[lo : lo + 2000]
                    ]
                    for meta in await asyncio.gather(*sent):
                        tp = (meta.topic, meta.partition)
                        self.ends[tp] = max(self.ends.get(tp, 0), meta.offset + 1)
            finally:
                await producer.stop()
            return time.perf_counter() - started

        seconds = asyncio.run(go())
        for name in [*settings.input_topics, settings.topic_rerouted]:
            for p in range(settings.partitions):
                self.ends.setdefault((name, p), 0)
        self.expected = sum(self.ends.values())
        names = sorted({t for t, _ in self.ends})
        self.listed_ends = asyncio.run(self._offsets(None, names, settings.partitions))
        return seconds

    async def _offsets(
        self, group: str | None, names: list[str], partitions: int = 8
    ) -> dict[tuple[str, int], int]:
        """End offsets (``group`` None) or the group's committed offsets (-1: none)."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in names for p in range(partitions)]
            if group is None:
                ends = await consumer.end_offsets(tps)
                return {(tp.topic, tp.partition): int(o) for tp, o in ends.items()}
            out = {}
            for tp in tps:
                committed = await consumer.committed(tp)
                out[(tp.topic, tp.partition)] = -1 if committed is None else int(committed)
            return out
        finally:
            await consumer.stop()

    def commits_reach_end(self, group: str, timeout_s: float) -> tuple[bool, float, int]:
        """Poll the group's committed offsets until they equal the end offsets; returns
        (reached, seconds waited, records still uncommitted at the last poll)."""
        names = sorted({t for t, _ in self.ends})
        started = time.monotonic()
        while True:
            committed = asyncio.run(self._offsets(group, names))
            behind = sum(end - max(0, committed[tp]) for tp, end in self.ends.items())
            waited = time.monotonic() - started
            if behind == 0 or waited >= timeout_s:
                return behind == 0, round(waited, 1), behind
            time.sleep(0.5)

    def spawn(self, name: str, spec: dict[str, Any], extra_env: dict[str, str]) -> Proc:
        spec_path = self.run_dir / f"{self.procs.next_name(name)}.spec.json"
        spec_path.write_text(json.dumps(spec))
        argv = [sys.executable, "-m", "benchmarks.faust_paths", "--child", str(spec_path)]
        return self.procs._spawn(name, argv, self.env(spec["group"], extra_env), None)

    def throughput(self, candidate: str, rep: int, profile_dir: Path | None) -> dict[str, Any]:
        from benchmarks.procs import machine_busy_seconds

        group = f"{self.token}-{candidate}-{rep}{'-profiled' if profile_dir else ''}"
        out = self.run_dir / f"{group}.json"
        spec: dict[str, Any] = {"candidate": candidate, "group": group, "out": str(out)}
        spec["expected"] = self.expected
        load1 = os.getloadavg()[0]
        busy, wall = machine_busy_seconds(), time.monotonic()
        proc = self.spawn(candidate, spec, CANDIDATES[candidate][2])
        spy = None
        try:
            if profile_dir is not None:
                from benchmarks.profile import Spy

                first = Path(f"{out}.first")
                deadline = time.monotonic() + 120
                while not first.exists() and time.monotonic() < deadline:
                    proc.check("waiting for its first batch")
                    time.sleep(0.05)
                spy = Spy(proc.pid, profile_dir / f"{candidate}.txt")
            result = wait_result(proc, out, 120 + self.expected / 500)
            if spy is not None:
                spy.stop()
            busy_cores = (machine_busy_seconds() - busy) / (time.monotonic() - wall)
            reached, waited, behind = self.commits_reach_end(group, 30.0)
        finally:
            if spy is not None:
                spy.stop()
            self.procs.stop([proc])
        result.update(load1_before=round(load1, 2), machine_busy_cores=round(busy_cores, 2))
        result.update(commits_reach_end=reached, commit_wait_s=waited, uncommitted=behind)
        result["exactly_once"] = result["distinct"] == self.expected and not result["duplicates"]
        return result

    def rebalance(
        self, candidate: str, slow_s: float, join_after_s: float, kill_first: bool
    ) -> dict[str, Any]:
        """Two processes of one group, the second joining mid-stream (and, ``kill_first``,
        the first then killed with SIGKILL once the second has read some): every record
        must be seen by one of them and the group's commits must reach the end offsets."""
        group = f"{self.token}-{candidate}-rebalance{'-kill' if kill_first else ''}"
        logs = [self.run_dir / f"{group}-{i}.seen" for i in (0, 1)]
        specs = [
            {"candidate": candidate, "group": group, "out": str(self.run_dir / f"{group}-{i}")}
            | {"expected": 10**12, "seen_log": str(logs[i]), "slow_s": slow_s}
            for i in (0, 1)
        ]
        first = self.spawn(f"{candidate}-a", specs[0], CANDIDATES[candidate][2])
        procs = [first]
        try:
            marker = Path(f"{specs[0]['out']}.first")
            deadline = time.monotonic() + 120
            while not marker.exists() and time.monotonic() < deadline:
                first.check("waiting for its first batch")
                time.sleep(0.05)
            time.sleep(join_after_s)
            procs.append(self.spawn(f"{candidate}-b", specs[1], CANDIDATES[candidate][2]))
            if kill_first:
                marker = Path(f"{specs[1]['out']}.first")
                while not marker.exists() and time.monotonic() < deadline + 120:
                    procs[1].check("waiting for its first batch")
                    time.sleep(0.05)
                time.sleep(1.0)
                first.process.kill()  # mid-batch: read, maybe seen, not acknowledged
            reached, waited, behind = self.commits_reach_end(group, 240.0)
        finally:
            self.procs.stop(procs)
        seen = [Counter(tuple(ln.split()) for ln in p.read_text().splitlines()) if p.exists()
                else Counter[tuple[str, ...]]() for p in logs]  # fmt: skip
        union = seen[0] | seen[1]
        every = {(t, str(p), str(o)) for (t, p), end in self.ends.items() for o in range(end)}
        return {
            "candidate": candidate,
            "first_killed": kill_first,
            "slow_s": slow_s,
            "join_after_first_batch_s": join_after_s,
            "records": self.expected,
            "seen_by_first": sum(seen[0].values()),
            "seen_by_second": sum(seen[1].values()),
            "distinct_seen": len(union),
            "missing": len(every - set(union)),
            "seen_twice_or_more": sum(1 for k in union if seen[0][k] + seen[1][k] > 1),
            "commits_reach_end": reached,
            "commit_wait_s": waited,
            "uncommitted": behind,
        }


def package_shares(raw: Path) -> dict[str, list[tuple[str, float]]]:
    """Per thread, the share of samples whose innermost frame is in each package."""
    threads: dict[str, Counter[str]] = {}
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        inner = frames[-1]
        where = next((p.rstrip("/") for p in PACKAGES if f"({p}" in inner), "other")
        threads.setdefault(thread, Counter())[where] += int(count)
    return {
        t: [(k, round(100 * v / sum(c.values()), 1)) for k, v in c.most_common()]
        for t, c in threads.items()
    }


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def table(throughput: dict[str, list[dict[str, Any]]]) -> list[str]:
    """events/s drops when other processes take the consumer's core; events per CPU
    second of the consumer does much less (the figure to compare under load)."""
    lines = ["| candidate | events/s | events per CPU s | CPU cores | load1 | once | committed |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for candidate, rs in throughput.items():
        if not rs:
            continue
        rate = _spread([r["events_per_s"] for r in rs])
        per_cpu = _spread([r["events_per_s"] / max(1e-9, r["cpu_cores"]) for r in rs])
        cpu = statistics.median(r["cpu_cores"] for r in rs)
        load = ", ".join(str(r["load1_before"]) for r in rs)
        ok, committed = all(r["exactly_once"] for r in rs), all(r["commits_reach_end"] for r in rs)
        lines.append(
            f"| {candidate} | {rate} | {per_cpu} | {cpu:.2f} | {load} | {ok} | {committed} |"
        )
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faust_paths")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--rebalance", default="agent,tap_conductor,tap_drain")
    parser.add_argument("--kill", default="tap_drain")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--out", type=Path, help="default benchmarks/results/faust-paths-<date>.json"
    )
    parser.add_argument("--keep", type=Path, help="a directory for the logs, kept after the run")
    args = parser.parse_args(argv)
    if args.child is not None:
        run_child(json.loads(args.child.read_text()))
        return 0
    from streams.services import embedded_services

    candidates = [c for c in args.candidates.split(",") if c]
    unknown = set(candidates) - set(CANDIDATES)
    if unknown:
        raise SystemExit(f"--candidates: unknown {sorted(unknown)}; known: {list(CANDIDATES)}")
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    out: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="faust-paths-") as tmp:
        run_dir = args.keep or Path(tmp)
        run_dir.mkdir(parents=True, exist_ok=True)
        with embedded_services(run_dir / "services") as endpoints, Procs(run_dir) as procs:
            bench = Bench(procs, endpoints, run_dir, f"fp{uuid.uuid4().hex[:6]}")
            out["publish_s"] = round(bench.publish(args.customers), 2)
            out["records"] = bench.expected
            out["records_by_list_offsets"] = sum(bench.listed_ends.values())
            print(f"published {bench.expected:,} records in {out['publish_s']} s", flush=True)
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in candidates}
            for rep in range(args.repeats):
                for candidate in (
                    candidates[rep % len(candidates) :] + candidates[: rep % len(candidates)]
                ):
                    runs[candidate].append(bench.throughput(candidate, rep, None))
                    r = runs[candidate][-1]
                    print(f"{candidate} #{rep}: {r['events_per_s']:,.0f}/s load {r['load1_before']}"
                          f" exactly_once={r['exactly_once']} committed={r['commits_reach_end']}",
                          flush=True)  # fmt: skip
            out["throughput"] = runs
            if args.profile:
                raw = RESULTS / f"faust-paths-{date}-profiles"
                raw.mkdir(parents=True, exist_ok=True)
                out["profiled"] = {
                    c: bench.throughput(c, 0, raw) for c in ("agent", "tap_conductor", "tap_drain")
                }
                out["profile_packages"] = {
                    c: package_shares(raw / f"{c}.txt") for c in out["profiled"]
                }
            scenarios = [(c, False) for c in args.rebalance.split(",") if c]
            scenarios += [(c, True) for c in args.kill.split(",") if c]
            out["rebalance"] = [bench.rebalance(c, 0.2, 3.0, kill) for c, kill in scenarios]
    out["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    path = args.out or RESULTS / f"faust-paths-{date}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print("\n".join(table(out["throughput"])))
    for check in out["rebalance"]:
        print(json.dumps(check))
    for c, threads in out.get("profile_packages", {}).items():
        print(c, json.dumps(threads))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
