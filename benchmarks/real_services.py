"""Apache Kafka (scripts/apache-kafka.sh) and Debian's redis-server for a benchmark run.

The embedded pair (Tansu, Valkey) is what `make demo` runs on; users run Apache Kafka and
Redis, whose latency differs: Tansu answers a fetch only when the consumer's fetch wait is up,
Apache Kafka as soon as a record is there. `python -m benchmarks.run --services apache`
measures on these instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from streams.dev.services import Endpoints, free_port

REPO = Path(__file__).resolve().parent.parent
KAFKA_SCRIPT = REPO / "scripts" / "apache-kafka.sh"
REDIS_START_TIMEOUT_S = 30.0


class RealServicesMissing(RuntimeError):
    """Java 17+, Maven or redis-server is not installed."""


def _redis(run_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(data), "--logfile", str(data / "redis.log")),
            ],
            stdin=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                redis.Redis.from_url(url, socket_timeout=1).ping()
                return proc, url
            except redis.ConnectionError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"redis-server did not start; see {data / 'redis.log'}")


@contextmanager
def apache_services(run_dir: Path) -> Iterator[Endpoints]:
    """A single-node Apache Kafka (KRaft) and a redis-server without persistence, stopped
    on exit. Idempotent producers are on (Apache Kafka has InitProducerId), as in production."""
    missing = [tool for tool in ("java", "mvn", "redis-server") if shutil.which(tool) is None]
    if missing:
        raise RealServicesMissing(f"--services apache needs {', '.join(missing)}")
    subprocess.run([str(KAFKA_SCRIPT), "fetch"], check=True, stdout=subprocess.DEVNULL)
    kafka_dir = run_dir / "kafka"
    bootstrap = subprocess.run(
        [str(KAFKA_SCRIPT), "start", str(kafka_dir)], check=True, capture_output=True, text=True
    ).stdout.strip()
    redis_proc = None
    previous = os.environ.get("ENGAGEMENT_PRODUCER_IDEMPOTENCE")
    try:
        redis_proc, redis_url = _redis(run_dir)
        os.environ["ENGAGEMENT_PRODUCER_IDEMPOTENCE"] = "true"  # inherited by the workers
        yield Endpoints(bootstrap, redis_url)
    finally:
        if previous is None:
            os.environ.pop("ENGAGEMENT_PRODUCER_IDEMPOTENCE", None)
        else:
            os.environ["ENGAGEMENT_PRODUCER_IDEMPOTENCE"] = previous
        if redis_proc is not None:
            redis_proc.terminate()
            try:
                redis_proc.wait(20)
            except subprocess.TimeoutExpired:
                redis_proc.kill()
                redis_proc.wait()
        subprocess.run([str(KAFKA_SCRIPT), "stop", str(kafka_dir)], check=False)


def kafka_version() -> str:
    out = subprocess.run([str(KAFKA_SCRIPT), "version"], capture_output=True, text=True)
    return f"Apache Kafka {out.stdout.strip() or '?'}"
