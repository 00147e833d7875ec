"""Where the time goes: py-spy profiles of the processes the benchmark measures.

    python -m benchmarks.profile [--out benchmarks/results/profile-<date>] [--smoke]
        [--only scorer,faust_noack_take,alerts,sweep] [--native]

Needs py-spy in the virtualenv (the `profile` extra: `make profile` installs it). Starts
its own embedded broker and Redis, publishes the throughput workload of `benchmarks.run`,
and records, at 100 Hz without pausing the target (--nonblocking; --native pauses it, to
see the compiled scoring modules' C functions), one thread at a time (--threads):

- ``scorer``: `python -m streams.cli worker` scoring the whole workload (event clock);
- ``faust_noack_take``: the no-op Faust agent of the framework ceiling;
- ``alerts``: a worker on the wall clock scoring detractor answers at 2,000/s (an alert
  for every event);
- ``sweep``: Scorer.sweep over 100,000 due customers (recorded after the setup).

Writes each raw profile (collapsed stacks: `flamegraph.pl` or speedscope read them) and
`summary.md`: per thread, the functions with the most samples on the stack (inclusive)
and at its top (self). The figures measured under the profiler are slower than without.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import latency, sections, sweeps, workload
from benchmarks.procs import REPO, Proc, Procs, service_pids
from scoring.config import load_config
from streams.dev.services import embedded_services
from streams.dev.simulator import publish
from streams.kafka.topics import ensure_topics

PY_SPY = Path(sys.executable).with_name("py-spy")
_LINE = re.compile(r":\d+\)$")


class Spy:
    """py-spy recording one process until stopped (or until the process exits)."""

    # --native: the C frames too. The compiled scoring modules run no Python frames, so
    # without it their time shows as their nearest interpreted caller's own. Native
    # unwinding pauses the target at each sample (no --nonblocking).
    native = False

    def __init__(self, pid: int, out: Path, gil: bool = False, rate: int = 100) -> None:
        self.out = out
        argv = [str(PY_SPY), "record", "-p", str(pid), "-o", str(out), "-f", "raw"]
        argv += ["-r", str(rate), "--threads", "--native" if self.native else "--nonblocking"]
        if gil:
            # Only samples holding the GIL: each thread's real share of a worker's CPU
            # (without it a thread waiting for the GIL counts as busy).
            argv.append("--gil")
        self.log = out.with_suffix(".py-spy.log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def summarize(path: Path, top: int = 20) -> dict[str, Any]:
    """Per thread: samples, and the top functions inclusive and self (line numbers
    dropped, so a function counts once per sample)."""
    threads: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return threads
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread (") else "?"
        names = [_LINE.sub(")", f) for f in frames[1:]] or ["?"]
        t = threads.setdefault(thread, {"samples": 0, "inclusive": Counter(), "self": Counter()})
        t["samples"] += n
        t["self"][names[-1]] += n
        for name in set(names):
            t["inclusive"][name] += n
    return {
        name: {
            "samples": t["samples"],
            "inclusive": t["inclusive"].most_common(top),
            "self": t["self"].most_common(top),
        }
        for name, t in sorted(threads.items(), key=lambda kv: -int(kv[1]["samples"]))
    }


# (label, patterns): a sample belongs to the first rule with a pattern anywhere in its
# stack; samples matching none are put with the innermost frame of a known library.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("timer: Scorer.sweep (inactivity)", ("Scorer.sweep (", "Timers.sweep (")),
    ("timer: outbox relay", ("relay_outbox (",)),
    ("timer: event-clock release", ("release_waiting (",)),
    ("web: /metrics, /healthz", ("generate_latest (", "healthz (")),
    ("decode + validate (pydantic model_validate_json)", ("Decoder.decode (",)),
    ("Redis read: pipeline + CustomerState.from_bytes", ("StateStore.read (",)),
    ("Redis commit: args, to_bytes, EVALSHA pipeline", ("StateStore.commit (",)),
    ("scoring: apply_event", ("apply_event (",)),
    ("sweep scoring: evaluate_due", ("evaluate_due (",)),
    ("alerts: model_dump_json for the outbox", ("Scorer._outbox_triple (", "Scorer._entries (")),
    ("alerts: publish to Kafka + XDEL outbox", ("Publisher.publish (", "AlertDelivery._run (")),
    ("ack: stream.ack per event", ("Stream.ack (",)),
    ("Record + inflight bookkeeping (_record)", ("_record (streams/worker/runtime.py",)),
    ("event-time buffer", ("EventTimeBuffer.",)),
    ("Faust take/noack_take buffering", ("Stream.noack_take (", "Stream.take (")),
    (
        "rest of the agent body / Scorer.process",
        ("_read_through_agent.<locals>.score (", "Scorer."),
    ),
    ("Redis due/meta reads (sweep)", ("StateStore.due_customers (", "StateStore.metas (")),
)
SWEEP_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("due customers: ZRANGEBYSCORE per shard", ("StateStore.due_customers (",)),
    ("read: MGET", ("StateStore.read_stored (", "StateStore.read (")),
    ("read the fields settling needs from the blob", ("stored_fields (", "check_inputs (")),
    ("decode the stored states", ("decode (",)),
    ("commit: to_bytes, script arguments, EVALSHA", ("StateStore.commit (",)),
    (
        "settle: search for the exact check time",
        ("settle (", "exact_check_at (", "settled_check_at (", "_search ("),
    ),
    ("patch the stored blob's check time", ("with_exact_check (",)),
    ("settle loop over a shard's blobs", ("settle_stored (",)),
    ("churn evaluation at the due time (+ alerts)", ("_evaluate_churn (",)),
    ("alerts: model_dump_json for the outbox", ("Scorer._outbox_triple (", "Scorer._entries (")),
    (
        "rest of sweep_due / Scorer._sweep",
        ("sweep_due (", "sweep_shard (", "Scorer._sweep ("),
    ),
)
# Functions whose inclusive share inside an anchor function the summary lists.
INSIDE: dict[str, tuple[str, tuple[str, ...]]] = {
    "scorer": ("apply_event", ("replace", "_evaluate_churn", "churn_risk", "BaseModel.__init__",
                               "_fold", "CustomerState.contributed", "earliest_check_at",
                               "event_digest", "_intervene", "evaluate_due", "decide_churn")),
    "alerts": ("apply_event", ("replace", "_evaluate_churn", "churn_risk", "_intervene",
                               "BaseModel.__init__", "engagement_score", "alert_id", "_fold",
                               "CustomerState.new")),
    "sweep": ("Scorer._sweep", ("settle", "settle_stored", "stored_fields", "rising_terms",
                                "replace", "StateStore.read", "CustomerState.from_bytes",
                                "StateStore.commit", "CustomerState.to_bytes",
                                "AbstractConnection.pack_command", "_evaluate_churn")),
}  # fmt: skip
LIBRARIES = (
    ("faust/", "Faust: consumer, conductor, stream, events"),
    ("mode/", "Faust: mode services, queues, timers"),
    ("aiokafka/", "aiokafka: fetch, protocol, producer"),
    ("redis/", "redis-py"),
    ("pydantic", "pydantic"),
    ("asyncio/", "asyncio event loop"),
)


def inside(path: Path, anchor: str, names: tuple[str, ...]) -> tuple[int, list[tuple[str, int]]]:
    """Main-thread samples inside ``anchor``, and how many of them are inside each of
    ``names`` (function names without module, as py-spy prints them)."""
    total, found = 0, Counter[str]()
    if not path.exists():
        return 0, []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        raw = stack.split(";")
        frames = [f.split(" (", 1)[0] for f in raw[1:]]
        if not count.isdigit() or "MainThread" not in raw[0] or anchor not in frames:
            continue
        below = set(frames[frames.index(anchor) :])
        total += int(count)
        for name in names:
            if name in below:
                found[name] += int(count)
    return total, [(name, found[name]) for name in names]


def breakdown(
    path: Path, rules: tuple[tuple[str, tuple[str, ...]], ...] = RULES
) -> dict[str, list[tuple[str, int]]]:
    """Samples per thread by where they were spent (see RULES)."""
    out: dict[str, Counter[str]] = {}
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread (") else "?"
        label = next((lb for lb, pats in rules if any(p in stack for p in pats)), None)
        if label is None:
            label = "other"
            for frame in reversed(frames[1:]):
                found = next((lb for prefix, lb in LIBRARIES if f"({prefix}" in frame), None)
                if found:
                    label = found
                    break
        out.setdefault(thread, Counter())[label] += int(count)
    return {t: c.most_common() for t, c in out.items()}


def _markdown(profiles: dict[str, dict[str, Any]], figures: dict[str, Any], raw: Path) -> str:
    mode = "--native (pausing at each sample)" if Spy.native else "--nonblocking"
    lines = [f"# Profiles (py-spy, 100 Hz, --threads {mode})", ""]
    for name, threads in profiles.items():
        lines += [f"## {name}", "", f"measured under the profiler: `{figures.get(name)}`", ""]
        rules = SWEEP_RULES if name == "sweep" else RULES
        for thread, rows in breakdown(raw / f"{name}.txt", rules).items():
            total = max(1, sum(n for _, n in rows))
            lines += [f"### where thread {thread} spends its samples ({total})", ""]
            lines += ["| where | samples | % |", "| --- | --- | --- |"]
            lines += [f"| {label} | {n} | {100 * n / total:.1f} |" for label, n in rows]
            lines.append("")
        if name in INSIDE:
            anchor, names = INSIDE[name]
            total, rows = inside(raw / f"{name}.txt", anchor, names)
            lines += [f"### inside `{anchor}` ({total} samples; inclusive, so they overlap)", ""]
            lines += ["| function | % of them |", "| --- | --- |"]
            lines += [f"| `{fn}` | {100 * n / max(1, total):.1f} |" for fn, n in rows]
            lines.append("")
        for thread, t in threads.items():
            total = max(1, t["samples"])
            lines += [f"### thread {thread}: {t['samples']} samples", ""]
            lines += ["| inclusive | % | self | % |", "| --- | --- | --- | --- |"]
            for i in range(max(len(t["inclusive"]), len(t["self"]))):
                inc = t["inclusive"][i] if i < len(t["inclusive"]) else ("", 0)
                slf = t["self"][i] if i < len(t["self"]) else ("", 0)
                lines.append(
                    f"| `{inc[0]}` | {100 * inc[1] / total:.1f} | "
                    f"`{slf[0]}` | {100 * slf[1] / total:.1f} |"
                )
            lines.append("")
    return "\n".join(lines)


def _attach_later(out: Path, delay: float = 0.0) -> tuple[Callable[[Proc], None], list[Spy]]:
    spies: list[Spy] = []

    def attach(proc: Proc) -> None:
        time.sleep(delay)
        spies.append(Spy(proc.pid, out))

    return attach, spies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="the smoke workload")
    parser.add_argument("--summarize", type=Path, help="only rewrite DIR/summary.md")
    parser.add_argument(
        "--only", help="comma-separated: which of scorer, faust_noack_take, alerts, sweep"
    )
    parser.add_argument(
        "--native", action="store_true", help="C frames too (the compiled scoring modules)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    Spy.native = args.native
    if args.summarize:
        saved: dict[str, Any] = json.loads((args.summarize / "figures.json").read_text())
        profiles = {name: summarize(args.summarize / f"{name}.txt") for name in saved}
        (args.summarize / "summary.md").write_text(_markdown(profiles, saved, args.summarize))
        return 0
    if not PY_SPY.exists():
        raise SystemExit(f"py-spy not found at {PY_SPY}: .venv/bin/pip install py-spy")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    out: Path = args.out or REPO / "benchmarks" / "results" / f"profile-{day}"
    out.mkdir(parents=True, exist_ok=True)
    plan = sections.Plan.smoke_plan() if args.smoke else sections.Plan.full()
    run_dir = Path(tempfile.mkdtemp(prefix="engagement-profile-"))
    (run_dir / "logs").mkdir()
    events = workload.replay(plan.customers, plan.days, plan.seed)
    templates_path = run_dir / "templates.jsonl"
    workload.write_templates(
        templates_path,
        workload.customer_states(
            plan.template_customers, plan.template_days, plan.seed, load_config(None)
        ),
    )
    token = f"p{uuid.uuid4().hex[:6]}"
    figures: dict[str, Any] = {}
    chosen = set(args.only.split(",")) if args.only else set(PROFILED)
    with (
        embedded_services(run_dir / "services") as endpoints,
        Procs(run_dir / "logs") as procs,
    ):
        ctx = sections.Context(
            plan=plan,
            endpoints=endpoints,
            procs=procs,
            run_dir=run_dir,
            token=token,
            service_pids=service_pids(endpoints),
            events=events,
            templates=workload.read_templates(templates_path),
            templates_path=templates_path,
        )
        inputs = f"{token}in"
        base = sections.settings_of(ctx.env(inputs, inputs, inputs))

        async def publish_inputs() -> None:
            await ensure_topics(base)
            await publish(events, base)

        asyncio.run(publish_inputs())

        # the scorer, from start to the last event scored
        if "scorer" in chosen:
            env = ctx.env(f"{inputs}-scorer", inputs, f"{inputs}.scorer")
            worker = procs.worker("scorer", env)
            time.sleep(1.0)  # let the interpreter start before attaching
            spy = Spy(worker.pid, out / "scorer.txt")
            try:
                figures["scorer"] = sections._measure_scorer(ctx, [worker], len(events))
            finally:
                spy.stop()
                procs.stop([worker])

        # the Faust ceiling
        if "faust_noack_take" in chosen:
            attach, spies = _attach_later(out / "faust_noack_take.txt")
            env = ctx.env(f"{inputs}-noack", inputs, inputs)
            spec = {"task": "faust", "mode": "noack_take", "expected": len(events)}
            try:
                figures["faust_noack_take"] = sections.task_run(
                    ctx, "noack", env, spec, 300, on_first=attach
                )
            finally:
                for s in spies:
                    s.stop()
        # an alert for every event, on the wall clock, at a fixed rate
        if "alerts" in chosen:
            env = ctx.env(f"{inputs}-alerts", f"{inputs}a", f"{inputs}a", ENGAGEMENT_CLOCK="wall")
            settings = sections.settings_of(env)
            asyncio.run(ensure_topics(settings))
            worker = procs.worker("alerts", env)
            try:
                while not worker.owned_shards():
                    worker.check("starting")
                    time.sleep(0.1)
                spy = Spy(worker.pid, out / "alerts.txt")
                rate_plan = ((2_000, 4.0 if plan.smoke else 15.0),)
                ctx.plan = replace(ctx.plan, latency=rate_plan)
                figures["alerts"] = asyncio.run(
                    latency.latency_phases(ctx, settings, f"{inputs}a", worker)
                )
            finally:
                spy.stop()
                procs.stop([worker])

        # the sweep, after its setup
        if "sweep" in chosen:
            attach, spies = _attach_later(out / "sweep.txt")
            env = ctx.env(f"{inputs}-sweep", inputs, inputs, ENGAGEMENT_CLOCK="wall")
            spec = {
                "task": "sweep",
                "templates": str(templates_path),
                "customers": plan.sweep_customers,
                "at": sweeps.SWEEP_AT,
                "pause_s": 1.5,
            }
            try:
                figures["sweep"] = sections.task_run(ctx, "sweep", env, spec, 600, on_first=attach)
            finally:
                for s in spies:
                    s.stop()

    return _finish(out, figures, run_dir)


PROFILED = ("scorer", "faust_noack_take", "alerts", "sweep")


def _finish(out: Path, figures: dict[str, Any], run_dir: Path) -> int:
    profiles = {name: summarize(out / f"{name}.txt") for name in figures}
    (out / "summary.md").write_text(_markdown(profiles, figures, out))
    (out / "figures.json").write_text(json.dumps(figures, indent=2))
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"profiles and summary.md written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
