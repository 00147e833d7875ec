"""Fixtures for integration tests: a real Kafka-compatible broker and a real Redis.

CI can point the tests at real Apache Kafka and Redis by setting both
``ENGAGEMENT_TEST_KAFKA_BOOTSTRAP`` and ``ENGAGEMENT_TEST_REDIS_URL``; otherwise the embedded
Tansu broker and Valkey server are started once for the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.dev.services import Endpoints, embedded_services, wait_for_kafka, wait_for_redis

KAFKA_ENV = "ENGAGEMENT_TEST_KAFKA_BOOTSTRAP"
REDIS_ENV = "ENGAGEMENT_TEST_REDIS_URL"
EXTERNAL_READY_TIMEOUT_S = 60.0
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    kafka, redis_url = os.environ.get(KAFKA_ENV), os.environ.get(REDIS_ENV)
    if kafka and redis_url:
        wait_for_kafka(kafka, EXTERNAL_READY_TIMEOUT_S)
        wait_for_redis(redis_url, EXTERNAL_READY_TIMEOUT_S)
        yield Endpoints(kafka_bootstrap=kafka, redis_url=redis_url)
        return
    if kafka or redis_url:
        pytest.fail(f"set both {KAFKA_ENV} and {REDIS_ENV}, or neither (embedded services)")
    with embedded_services(tmp_path_factory.mktemp("services")) as started:
        yield started


@pytest.fixture
def test_token() -> str:
    """One random token per test; ``namespace`` and ``topic_prefix`` share it."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def namespace(test_token: str) -> str:
    """A Redis key namespace no other test uses (valid for Settings.namespace)."""
    return test_token


@pytest.fixture
def topic_prefix(test_token: str) -> str:
    """A topic-name prefix no other test uses; join it with '.', e.g. f"{topic_prefix}.clicks"."""
    return test_token
