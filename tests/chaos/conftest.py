"""Fixtures of the fault-injection suite: servers it may break, the workload, its truth.

``CHAOS_SCALE=full`` (``make chaos``) runs every scenario at full size on Apache Kafka and
redis-server; otherwise (``make test``) one reduced scenario runs on the embedded pair.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
# The worker harness of the integration tests, and this directory's modules.
sys.path[:0] = [str(_HERE.parent / "integration"), str(_HERE)]

from driver import FULL, REDUCED, Scale  # noqa: E402
from services import Broker, RedisServer  # noqa: E402
from workload import Truth, Workload, build, ground_truth  # noqa: E402

from scoring.config import ScoringConfig, load_config  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session")
def scale() -> Scale:
    return FULL if os.environ.get("CHAOS_SCALE") == "full" else REDUCED


@pytest.fixture(scope="session")
def chaos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chaos")


@pytest.fixture(scope="session")
def redis_server(scale: Scale, chaos_dir: Path) -> Iterator[RedisServer]:
    if scale.real_services and not shutil.which("redis-server"):
        pytest.skip("the full chaos run needs redis-server (make real-services-deps)")
    server = RedisServer.choose(chaos_dir / "redis", real=scale.real_services)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def broker(scale: Scale, chaos_dir: Path) -> Iterator[Broker]:
    if scale.real_services and not (shutil.which("java") and shutil.which("mvn")):
        pytest.skip("the full chaos run needs Java 17+ and Maven for Apache Kafka")
    server = Broker(apache=scale.real_services, workdir=chaos_dir / "broker")
    server.workdir.mkdir(parents=True, exist_ok=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def config() -> ScoringConfig:
    return load_config(None)


@pytest.fixture(scope="session")
def workload(scale: Scale) -> Workload:
    return build(scale.customers, scale.days, scale.poison, scale.partitions, seed=1)


@pytest.fixture(scope="session")
def truth(workload: Workload, config: ScoringConfig) -> Truth:
    return ground_truth(workload, config)
