"""Worker processes for the demo, the tests, the fault suite and the benchmarks: one
launcher, so every one of them runs the worker exactly as a user does
(``engagement worker``, here ``python -m streams.cli worker``), reached over its web port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from streams.dev.services import free_port


@dataclass
class WorkerProcess:
    """A worker started by :meth:`start`, serving /healthz and /metrics on ``port``."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(
        cls,
        env: Mapping[str, str],
        log: Path,
        *,
        loglevel: str = "info",
        cwd: Path | None = None,
        module: str = "streams.cli",
    ) -> WorkerProcess:
        """Start ``python -m module worker`` with ``env`` over this process's environment,
        on a free web port, its output in ``log``; ``cwd``: where it imports from (another
        checkout, for an A/B)."""
        port = free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", module, "worker", "--loglevel", loglevel],
                env={
                    **os.environ,
                    **env,
                    "ENGAGEMENT_WEB_PORT": str(port),
                    "PYTHONUNBUFFERED": "1",
                },
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
            )
        return cls(process, port, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def get(self, path: str, timeout: float = 2.0) -> str:
        """The body the worker's web server answers at ``path``; "" when it does not."""
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    def owned_shards(self) -> list[int]:
        body = self.get("/healthz")
        return [int(s) for s in orjson.loads(body)["owned_shards"]] if body.startswith("{") else []

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        total = 0.0
        for line in self.get("/metrics").splitlines():
            m = re.match(rf"^{name}(?:\{{(.*)\}})? ([0-9.e+-]+)$", line)
            if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        """A clean stop (SIGTERM), killed if it has not exited within ``timeout``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill9(self) -> bool:
        """SIGKILL, as a crash would; whether it was still running."""
        if self.process.poll() is not None:
            return False
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return True
