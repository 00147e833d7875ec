"""Creating the topics the scorer reads and writes, and checking their partition counts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings

log = logging.getLogger(__name__)


class TopicLayoutError(RuntimeError):
    pass


def all_topics(settings: Settings) -> list[str]:
    return [
        *settings.input_topics,
        settings.topic_rerouted,
        settings.topic_churn_risk,
        settings.topic_interventions,
        settings.topic_deadletter,
    ]


async def create_topics(
    bootstrap: str, names: Sequence[str], partitions: int, replication_factor: int = 1
) -> None:
    """Create the topics ``names`` (one that exists already is left as it is)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await _create(admin, names, partitions, replication_factor)
    finally:
        await admin.close()


async def _create(
    admin: AIOKafkaAdminClient, names: Sequence[str], partitions: int, replication_factor: int
) -> None:
    response = await admin.create_topics(
        [NewTopic(t, partitions, replication_factor) for t in names]
    )
    # aiokafka reports per-topic failures in the response instead of raising.
    # "Already exists" means another worker created it first.
    failed = [
        f"{topic}: {message or code}"
        for topic, code, *rest in response.topic_errors
        for message in [rest[0] if rest else None]
        if code not in (0, TopicAlreadyExistsError.errno)
    ]
    if failed:
        raise TopicLayoutError("could not create topics: " + "; ".join(failed))


async def ensure_topics(settings: Settings) -> set[str]:
    """Create missing topics with ``settings.partitions`` partitions.

    Returns the input topics whose partition count equals the shard count: on those a
    record's partition is its customer's shard. Records on other input topics are all
    rerouted, so an existing topic with another count still works, at one extra hop.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in all_topics(settings) if t not in existing]
        if missing:
            await _create(admin, missing, settings.partitions, settings.replication_factor)
        counts = await _settled_partition_counts(
            admin, [*settings.input_topics, settings.topic_rerouted]
        )
    finally:
        await admin.close()
    if counts.get(settings.topic_rerouted) != settings.partitions:
        raise TopicLayoutError(
            f"{settings.topic_rerouted} has {counts.get(settings.topic_rerouted)} partitions; "
            f"it must have ENGAGEMENT_PARTITIONS={settings.partitions}"
        )
    aligned = {t for t in settings.input_topics if counts.get(t) == settings.partitions}
    for t in set(settings.input_topics) - aligned:
        log.warning(
            "%s has %s partitions, not %s: all its records will be rerouted",
            t,
            counts.get(t),
            settings.partitions,
        )
    return aligned


async def _settled_partition_counts(
    admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float = 30.0
) -> dict[str, int]:
    """Partition counts once every topic is visible: a topic another worker created a
    moment ago may not have reached this broker's metadata yet (Apache Kafka)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = await _partition_counts(admin, topics)
        if all(counts.get(t) for t in topics) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


async def _partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(topics)
    return {
        d["topic"]: len(d["partitions"])
        for d in described
        if not d.get("error_code") and d.get("partitions")
    }
