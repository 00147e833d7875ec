"""The worker as `streams.cli worker` makes it: its logging, its Kafka fetch bounds."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
import pytest
from aiokafka import AIOKafkaConsumer

from streams.cli import quiet_worker
from streams.kafka import transport
from streams.kafka.fetching import FetchBounds


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    root.setLevel(level)
    root.handlers[:] = handlers


def test_debug_calls_of_the_libraries_build_no_records(root_logger: logging.Logger) -> None:
    app = faust.App("test-quiet-worker", broker="memory://", store="memory://")
    worker = quiet_worker(app, "warn")
    root_logger.setLevel(logging.WARNING)
    if not root_logger.handlers:
        root_logger.addHandler(logging.NullHandler())
    # What mode's worker calls once it has configured the root logger at ``loglevel``:
    # Faust's own spinner would set the root logger to DEBUG here.
    worker.on_setup_root_logger(root_logger, logging.WARNING)
    assert root_logger.level == logging.WARNING
    assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("mode.services").isEnabledFor(logging.DEBUG)


async def test_the_fetch_bounds_reach_the_kafka_consumer_faust_creates() -> None:
    # Faust's own driver and aiokafka's consumer, built as the worker builds them, through
    # the worker's transport (nothing connects before start): the driver hard-codes
    # fetch_max_wait_ms=1500.
    app = faust.App(
        "test-fetch-bounds",
        broker="kafka://127.0.0.1:9",
        broker_consumer=f"{transport.SCHEME}://127.0.0.1:9",
        store="memory://",
    )
    app.finalize()
    assert isinstance(app.consumer, transport.Consumer)
    app.consumer.fetch_bounds = FetchBounds(10, 65_536, None)
    kafka_consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert isinstance(kafka_consumer, AIOKafkaConsumer)
        assert kafka_consumer._fetch_max_wait_ms == 10
        assert kafka_consumer._fetch_min_bytes == 65_536
    finally:
        await kafka_consumer.stop()
