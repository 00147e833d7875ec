"""Subprocesses of a benchmark run: scorer workers and measuring tasks, their CPU time,
and stopping every one of them however the run ends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.dev.services import Endpoints, free_port
from streams.dev.workers import WorkerProcess

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Outcomes that finish an input record (rerouted ones come back on the rerouted topic,
# redelivered ones were already counted by whoever applied them first).
DONE_OUTCOMES = ("applied", "duplicate", "deadletter")
_SAMPLE = re.compile(r"^engagement_events_total\{(.*)\} ([0-9.e+-]+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (from /proc/stat)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_seconds(pids: Sequence[int]) -> float:
    """CPU seconds of this process, its reaped children and the live ``pids``."""
    t = os.times()
    live = sum(cpu_seconds(pid) or 0.0 for pid in pids)
    return t.user + t.system + t.children_user + t.children_system + live


def service_pids(endpoints: Endpoints, kafka_dir: Path | None = None) -> dict[str, int]:
    """Pids of the broker and Redis serving ``endpoints``: the embedded pair found by their
    ports, or an Apache Kafka started in ``kafka_dir`` and a redis-server."""
    kafka_port = endpoints.kafka_bootstrap.rpartition(":")[2]
    redis_port = endpoints.redis_url.rpartition(":")[2].split("/")[0]
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        joined = b" ".join(argv).decode(errors="replace")
        if "tansu" in joined and re.search(rf":{kafka_port}\b", joined):
            found["tansu"] = int(entry.name)
        elif "valkey" in joined and re.search(rf"[: ]{redis_port}\b", joined):
            found["valkey"] = int(entry.name)
        elif kafka_dir is not None and f"kafka.Kafka {kafka_dir}/" in joined:
            found["kafka"] = int(entry.name)
        elif "redis-server" in joined and re.search(rf"[: ]{redis_port}\b", joined):
            found["redis"] = int(entry.name)
    return found


def topic_names(prefix: str) -> dict[str, str]:
    names = ("clickstream", "purchases", "feedback", "rerouted", "churn_risk", "interventions",
             "deadletter")  # fmt: skip
    return {name: f"{prefix}.{name}" for name in names}


def engagement_env(
    endpoints: Endpoints,
    *,
    app_id: str,
    namespace: str,
    inputs: str,
    outputs: str,
    state_dir: Path,
    clock: str = "event",
    partitions: int = 8,
    **overrides: str,
) -> dict[str, str]:
    """ENGAGEMENT_* variables of a worker (or task) reading the input topics ``inputs.*``
    and writing its outputs, rerouted topic included, to ``outputs.*``; like the test
    suite's worker_env, but with production timer intervals."""
    env = {
        "ENGAGEMENT_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "ENGAGEMENT_REDIS_URL": endpoints.redis_url,
        "ENGAGEMENT_NAMESPACE": namespace,
        "ENGAGEMENT_APP_ID": app_id,
        "ENGAGEMENT_CLOCK": clock,
        "ENGAGEMENT_PARTITIONS": str(partitions),
        "ENGAGEMENT_STATE_DIR": str(state_dir),
    }
    for name, topic in topic_names(inputs).items():
        if name in ("clickstream", "purchases", "feedback"):
            env[f"ENGAGEMENT_TOPIC_{name.upper()}"] = topic
    for name, topic in topic_names(outputs).items():
        if name not in ("clickstream", "purchases", "feedback"):
            env[f"ENGAGEMENT_TOPIC_{name.upper()}"] = topic
    env.update(overrides)
    return env


def parse_events(body: str) -> dict[str, float]:
    """engagement_events_total summed by outcome."""
    totals: dict[str, float] = {}
    for line in body.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group(1)))
            outcome = labels.get("outcome", "?")
            totals[outcome] = totals.get(outcome, 0.0) + float(m.group(2))
    return totals


@dataclass
class Proc:
    """A started subprocess: a scorer worker (``port`` serves /metrics) or a task."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def get(self, path: str, timeout: float = 5.0) -> str | None:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def events(self) -> dict[str, float] | None:
        body = self.get("/metrics")
        return parse_events(body) if body is not None else None

    def owned_shards(self) -> list[int]:
        body = self.get("/healthz")
        if body is None or not body.startswith("{"):
            return []
        return [int(s) for s in json.loads(body).get("owned_shards", [])]

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check(self, what: str) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode} while {what}; "
                f"log {self.log}:\n{self.tail()}"
            )


class Procs:
    """Starts subprocesses and guarantees they are stopped: use as a context manager.

    ``wait_on_stop=False`` (smoke runs) sends SIGTERM and moves on, so a process may still
    be shutting down while the next one starts; they are all waited for on exit."""

    def __init__(self, log_dir: Path, wait_on_stop: bool = True) -> None:
        self.log_dir = log_dir
        self.wait_on_stop = wait_on_stop
        self.live: list[Proc] = []
        self.stopping: list[Proc] = []
        self._seq = 0
        # Where processes start (``python -m`` imports from there): this checkout, or
        # another one for the time of ``started_in``.
        self.root = REPO

    def __enter__(self) -> Procs:
        return self

    @contextmanager
    def started_in(self, root: Path) -> Iterator[None]:
        """Processes started meanwhile run another checkout's modules (from ``root``)."""
        before, self.root = self.root, root
        try:
            yield
        finally:
            self.root = before

    def __exit__(self, *exc: object) -> None:
        self._terminate([*self.live, *self.stopping])
        self.live.clear()
        self.stopping.clear()

    def pids(self) -> list[int]:
        return [p.pid for p in (*self.live, *self.stopping) if p.process.poll() is None]

    def next_name(self, name: str) -> str:
        self._seq += 1
        return f"{self._seq:03d}-{name}"

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str], port: int | None) -> Proc:
        self.stopping = [p for p in self.stopping if p.process.poll() is None]
        log = self.log_dir / f"{self.next_name(name)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        proc = Proc(name, process, log, port)
        self.live.append(proc)
        return proc

    def worker(self, name: str, env: dict[str, str]) -> Proc:
        """A worker (streams.dev.workers, as everywhere) with ``env``, serving /metrics on a
        free port."""
        self.stopping = [p for p in self.stopping if p.process.poll() is None]
        log = self.log_dir / f"{self.next_name(name)}.log"
        worker = WorkerProcess.start(env, log, loglevel="warn", cwd=self.root)
        proc = Proc(name, worker.process, log, worker.port)
        self.live.append(proc)
        return proc

    def task(self, name: str, env: dict[str, str], spec: dict[str, Any]) -> Proc:
        """``python -m benchmarks.tasks SPEC``; the task writes its result to spec["out"]."""
        spec_path = self.log_dir / f"{self.next_name(name)}.spec.json"
        spec_path.write_text(json.dumps(spec))
        port = free_port()  # Faust tasks serve a web port like the worker does
        argv = [sys.executable, "-m", "benchmarks.tasks", str(spec_path)]
        return self._spawn(name, argv, {**env, "ENGAGEMENT_WEB_PORT": str(port)}, port)

    def stop(self, procs: Sequence[Proc]) -> None:
        procs = [p for p in procs if p in self.live]
        for p in procs:
            self.live.remove(p)
        if self.wait_on_stop:
            self._terminate(procs)
        else:
            for p in procs:
                if p.alive():
                    p.process.send_signal(signal.SIGTERM)
            self.stopping.extend(procs)

    @staticmethod
    def _terminate(procs: Sequence[Proc], timeout: float = 20.0) -> None:
        """SIGTERM, wait, then SIGKILL whatever is left; each by its own pid."""
        for p in procs:
            if p.alive():
                p.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.process.kill()
                p.process.wait()


def wait_result(proc: Proc, out: Path, timeout_s: float) -> dict[str, Any]:
    """Wait for a task's result file (written atomically), failing if the task dies."""
    deadline = time.monotonic() + timeout_s
    while not out.exists():
        proc.check(f"waiting for {out.name}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name}: no result after {timeout_s:.0f}s\n{proc.tail()}")
        time.sleep(0.05)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def cpu_snapshot(pids: dict[str, int]) -> tuple[float, dict[str, float | None]]:
    return time.monotonic(), {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_usage(
    a: tuple[float, dict[str, float | None]], b: tuple[float, dict[str, float | None]]
) -> dict[str, float]:
    """CPU each process used between two snapshots, in cores (1.0 = one core busy)."""
    elapsed = max(1e-9, b[0] - a[0])
    usage: dict[str, float] = {}
    for name, before in a[1].items():
        after = b[1].get(name)
        if before is not None and after is not None:
            usage[name] = round((after - before) / elapsed, 3)
    return usage
