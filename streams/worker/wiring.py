"""One worker process: the Faust app and what it is wired to (Redis, the scorer, the
publisher, the consumer's hooks), its reading, timers and web views."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import sys
from collections.abc import Sequence
from typing import Any

import faust

from scoring import COMPILED
from scoring.config import ScoringConfig
from streams import metrics
from streams.kafka import seam
from streams.kafka.fetching import FetchBounds, FetchPolicy
from streams.kafka.publisher import Publisher
from streams.kafka.repositioning import Repositioning
from streams.kafka.transport import SCHEME, Consumer
from streams.pipeline.delivery import AlertDelivery
from streams.pipeline.processor import Scorer
from streams.settings import Settings
from streams.state.kpis import KpiSource
from streams.state.positions import GuardedStore, Positions
from streams.state.redis_client import redis_of
from streams.state.store import OutboxEntry
from streams.worker import web
from streams.worker.ingest import read_inputs
from streams.worker.runtime import Runtime, shards_of, stop_if_state_lost
from streams.worker.timers import Timers

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, config: ScoringConfig, aligned_topics: set[str], allowed: seam.Seam
) -> Runtime:
    """The worker's app, ready for Faust's worker to run, using what the installed
    frameworks allow (``allowed``: ``seam.check``, made before anything connects)."""
    app = faust_app(settings)
    client = redis_of(settings)
    store = GuardedStore(client, settings.namespace, per_shard_calls=settings.redis_per_shard_calls)
    scorer = Scorer.for_settings(settings, store, config, aligned_topics)
    publisher = Publisher.for_settings(settings)
    positions = Positions(store, settings.partitions)

    async def send_alerts(entries: Sequence[OutboxEntry]) -> None:
        await publisher.publish(alerts=entries)

    async def delete_sent(entries: Sequence[OutboxEntry]) -> None:
        await scorer.retrying(lambda: store.delete_outbox(entries))

    alerts = AlertDelivery(
        send_alerts, delete_sent, settings.max_unsent_alerts, sent=scorer.sent_alerts
    )
    rt = Runtime(settings, app, store, scorer, publisher, positions, alerts)
    _hook_consumer(rt, tuned_fetching=allowed.tuned_fetching)
    _hook_signals(rt)
    _announce_assignments(rt)

    read_inputs(rt, input_topic(app, settings), batches=allowed.batches)

    path = "batches" if allowed.batches else "agent"
    versions = seam.installed_versions()
    metrics.BUILD_INFO.labels(
        version=importlib.metadata.version("engagement-scorer"),
        scoring_core="compiled" if COMPILED else "pure",
        ingest=path,
        faust_streaming=versions["faust-streaming"],
        aiokafka=versions["aiokafka"],
    ).set(1)

    async def name_runtime() -> None:
        loop = type(asyncio.get_running_loop()).__module__
        core = f"compiled ({len(COMPILED)} modules)" if COMPILED else "pure Python"
        log.info("running on %s; scoring core %s; reading %s", loop, core, path)

    app.task(name_runtime)
    kpi_source = KpiSource(client, settings.namespace, settings.partitions, settings.clock)
    Timers(rt, kpi_source).schedule(app)
    web.route(app, rt, kpi_source)
    return rt


def faust_app(settings: Settings) -> Any:
    """The worker's Faust app, consuming through the worker's own consumer."""
    datadir = settings.state_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        # The worker's own consumer (streams/kafka/transport.py), by its entry point.
        broker_consumer=f"{SCHEME}://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_in_thread=False,
        datadir=str(datadir),
        logging_config=None,
        # Events waiting for the event clock are unacknowledged on purpose; a rebalance
        # must not wait for them (they are read again by the partition's next owner).
        stream_wait_empty=False,
    )


def input_topic(app: Any, settings: Settings) -> Any:
    """The input topics and the rerouted topic, read as one stream of raw records."""
    return app.topic(
        *settings.input_topics,
        settings.topic_rerouted,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )


def _hook_consumer(rt: Runtime, *, tuned_fetching: bool) -> None:
    """Set the worker consumer's hooks (streams/kafka/transport.py), except the batch
    path's, which the batch reader sets when it is installed."""
    consumer = rt.app.consumer
    if not isinstance(consumer, Consumer):
        raise RuntimeError(
            f"Faust made a {type(consumer).__name__} for {SCHEME}://: the "
            "faust.transports entry point of this package is missing (pip install it)"
        )
    settings = rt.settings
    consumer.repositioning = Repositioning(
        rt.positions, settings.consumed_topics, rt.scorer.retrying, stop_if_state_lost
    )
    policy = FetchPolicy(sessions=settings.fetch_sessions, gather_ms=settings.fetch_gather_ms)
    consumer.fetch_bounds = FetchBounds(
        settings.fetch_max_wait_ms, settings.fetch_min_bytes, policy if tuned_fetching else None
    )
    buffer = rt.scorer.buffer

    def highwater(topic: str, partition: int) -> int | None:
        # Unknown (not fetched yet, or not assigned) counts as "records left to read": the
        # event clock then waits rather than judging customers silent too early.
        try:
            value = consumer.highwater(faust.types.TP(topic, partition))
        except Exception:
            return sys.maxsize
        return int(value) if value is not None else sys.maxsize

    def committed(topic: str, partition: int) -> int | None:
        # Without it a restarted worker could not tell a fully read partition from an
        # unread one.
        return consumer.committed_offset(faust.types.TP(topic, partition))

    buffer.highwater = highwater
    buffer.committed = committed


def _announce_assignments(rt: Runtime) -> None:
    """One line on the process's own standard output, whatever the log level, when the
    worker first owns its shards and again after every rebalance: what someone starting
    a worker looks for (Faust's worker redirects ``sys.stdout`` to its logger)."""
    settings = rt.settings
    address = f"http://{settings.web_host}:{settings.web_port}"
    announced = False

    async def announce(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        nonlocal announced
        shards = shards_of(args[0], settings.consumed_topics)
        owned = ", ".join(map(str, shards)) if shards else "none"
        what = "rebalanced" if announced else "ready"
        announced = True
        out = sys.__stdout__
        if out is not None:
            print(
                f"engagement worker {what}: owns shards {owned} of {settings.partitions}; "
                f"{address}/healthz, {address}/metrics",
                file=out,
                flush=True,
            )

    rt.app.on_partitions_assigned.connect(announce)


def _hook_signals(rt: Runtime) -> None:
    app, alerts = rt.app, rt.alerts

    async def forget_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        rt.forget(args[0])

    app.on_partitions_revoked.connect(forget_revoked)

    async def remove_sent_alerts(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        # Alerts Kafka acknowledged wait for their shard's next commit to leave the
        # outbox; at a clean stop there is none, and the next owner would publish them again.
        try:
            await asyncio.wait_for(alerts.remove_sent(), 5.0)
        except Exception as exc:  # Redis away: the next owner publishes them (same ids)
            log.warning("sent alerts left in the outbox at stop: %r", exc)

    app.on_before_shutdown.connect(remove_sent_alerts)
