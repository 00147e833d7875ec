"""Worker processes under a supervisor: started, killed with SIGKILL, restarted.

The supervisor plays the part of systemd or Kubernetes: a worker that exits without being
told to (killed, or stopping itself because Redis lost writes) is started again.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from worker_harness import REPO

from streams.dev.workers import WorkerProcess
from streams.state.positions import EXIT_STATE_LOST

RESTART_DELAY_S = 0.5


@dataclass
class Member:
    name: str
    worker: WorkerProcess
    retired: bool = False  # stopped on purpose: not restarted


@dataclass
class Fleet:
    env: dict[str, str]
    log_dir: Path
    members: dict[str, Member] = field(default_factory=dict)
    kills: int = 0
    restarts: int = 0
    # Exits the supervisor saw, by cause: "killed", "state lost", "exit <code>".
    exits: list[str] = field(default_factory=list)
    _generation: int = 0

    def start(self, name: str) -> Member:
        self._generation += 1
        log = self.log_dir / f"{name}.{self._generation}.log"
        member = Member(name, WorkerProcess.start(self.env, log, cwd=REPO))
        self.members[name] = member
        return member

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if not m.retired]

    def kill9(self, name: str) -> None:
        if self.members[name].worker.kill9():
            self.kills += 1

    async def retire(self, name: str) -> None:
        """A clean leave (SIGTERM): the group rebalances, the worker is not restarted."""
        member = self.members[name]
        member.retired = True
        await asyncio.to_thread(member.worker.stop)

    async def supervise(self) -> None:
        """Restart every member that exited without being retired (until cancelled)."""
        while True:
            for member in self.live():
                code = member.worker.process.poll()
                if code is None:
                    continue
                cause = {-signal.SIGKILL: "killed", EXIT_STATE_LOST: "state lost"}
                self.exits.append(cause.get(code, f"exit {code}"))
                await asyncio.sleep(RESTART_DELAY_S)
                self.start(member.name)
                self.restarts += 1
            await asyncio.sleep(0.1)

    async def owned(self) -> dict[str, list[int]]:
        result = {}
        for m in self.live():
            result[m.name] = await asyncio.to_thread(m.worker.owned_shards)
        return result

    async def wait_cover(self, partitions: int, timeout_s: float) -> float:
        """Wait until the live workers split all shards between them; seconds waited."""
        started = time.monotonic()
        while True:
            owned = await self.owned()
            sets = [set(s) for s in owned.values()]
            union = set().union(*sets) if sets else set()
            if all(sets) and union == set(range(partitions)) and sum(map(len, sets)) == partitions:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                tails = "\n".join(m.worker.log_tail()[-1500:] for m in self.live())
                raise AssertionError(
                    f"workers did not split the shards in {timeout_s}s: {owned}\n{tails}"
                )
            await asyncio.sleep(0.2)

    def metric(self, name: str, **labels: str) -> float:
        return sum(m.worker.metric(name, **labels) for m in self.live())

    def stop_all(self) -> None:
        for member in self.members.values():
            member.retired = True
            member.worker.stop()

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of each live worker process (from /proc)."""
        sizes = {}
        for m in self.live():
            try:
                status = Path(f"/proc/{m.worker.process.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes[m.name] = int(line.split()[1]) / 1024
        return sizes
