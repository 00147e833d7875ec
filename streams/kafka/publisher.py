"""Publishing to Kafka: alerts, dead letters and rerouted records, each batch awaited.

A batch's input records are acknowledged only after everything it produced is delivered,
so a crash can duplicate an output (same alert_id) but never lose one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.partitioner import DefaultPartitioner

from streams.metrics import ALERTS_PUBLISHED, DEADLETTERS, EVENTS
from streams.pipeline.intake import SOURCE_TOPIC_HEADER, key_hash
from streams.pipeline.outcomes import DeadLetter, Reroute
from streams.settings import Settings
from streams.state.store import OutboxEntry

log = logging.getLogger(__name__)
# Errors after which an idempotent producer never sends again.
FATAL_TO_PRODUCER = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)

# (topic, key, value, partition, headers)
Outgoing = tuple[str, bytes | None, bytes | None, int | None, list[tuple[str, bytes]]]


class PacedMetadataClient:
    """aiokafka's client as its producer's sender sees it, with metadata updates at most
    one per ``retry_backoff_ms`` after one failed. While a partition's leader is unknown the
    sender asks for an update and goes round again as soon as the answer comes; a broker
    that is down refuses at once, so a worker spun at ~2,300 attempts a second, two error
    lines each, for as long as the broker was down (found by the fault suite)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._update: asyncio.Future[bool] | None = None
        self._next_update = 0.0  # loop time

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def force_metadata_update(self) -> asyncio.Future[bool]:
        if self._update is None or self._update.done():
            self._update = asyncio.ensure_future(self._paced_update())
        return self._update

    async def _paced_update(self) -> bool:
        loop = asyncio.get_running_loop()
        wait = self._next_update - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        updated = bool(await self._client.force_metadata_update())
        if not updated:
            self._next_update = loop.time() + self._client._retry_backoff
        return updated


class Publisher:
    def __init__(
        self,
        bootstrap: str,
        deadletter_topic: str,
        rerouted_topic: str,
        idempotence: bool,
        retry_max_s: float = 5.0,
    ) -> None:
        self.deadletter_topic = deadletter_topic
        self.rerouted_topic = rerouted_topic
        self.retry_max_s = retry_max_s
        self.bootstrap = bootstrap
        self.idempotence = idempotence
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    @classmethod
    def for_settings(cls, settings: Settings) -> Publisher:
        return cls(
            settings.kafka_bootstrap,
            settings.topic_deadletter,
            settings.topic_rerouted,
            idempotence=settings.producer_idempotence,
            retry_max_s=settings.redis_retry_max_s,
        )

    async def start(self) -> AIOKafkaProducer:
        # aiokafka wants a running loop at construction, so the producer is made here.
        async with self._starting:  # the agent and the timers publish concurrently
            if self._producer is None:
                self._producer = await self._new_producer()
            return self._producer

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = self._unstarted_producer()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # a failed start leaves its connections open
            raise
        return producer

    def _unstarted_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=self.idempotence,
            linger_ms=1,
            request_timeout_ms=15_000,
            partitioner=keyed_partition,
        )
        producer._sender.client = PacedMetadataClient(producer.client)
        return producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def publish(
        self,
        alerts: Sequence[OutboxEntry] = (),
        dead_letters: Sequence[DeadLetter] = (),
        reroutes: Sequence[Reroute] = (),
    ) -> None:
        outgoing: list[Outgoing] = [(a.topic, a.key, a.value, None, []) for a in alerts]
        for d in dead_letters:
            r = d.record
            headers = [
                ("error", d.reason.encode()),
                ("source_topic", r.topic.encode()),
                ("source_partition", str(r.partition).encode()),
                ("source_offset", str(r.offset).encode()),
            ]
            outgoing.append((self.deadletter_topic, r.key, r.value, None, headers))
        for rr in reroutes:
            headers = [(SOURCE_TOPIC_HEADER, rr.source_topic.encode())]
            key = rr.record.key
            outgoing.append((self.rerouted_topic, key, rr.record.value, rr.shard, headers))
        if not outgoing:
            return
        await self._deliver(outgoing)
        ALERTS_PUBLISHED.inc(len(alerts))
        for d in dead_letters:
            DEADLETTERS.labels(d.record.topic).inc()
            EVENTS.labels(d.record.topic, "deadletter").inc()
        for rr in reroutes:
            EVENTS.labels(rr.record.topic, "rerouted").inc()

    async def _deliver(self, outgoing: Sequence[Outgoing]) -> None:
        """Send all, await all; on failure resend the whole lot (duplicates are harmless:
        alert ids are deterministic and event ids are deduplicated)."""
        delay = 0.1
        while True:
            producer: AIOKafkaProducer | None = None
            try:
                # Fetched on every attempt: a broken producer is replaced (see below).
                producer = await self.start()
                futures = [
                    await producer.send(t, value=v, key=k, partition=p, headers=h)
                    for t, k, v, p, h in outgoing
                ]
                await asyncio.gather(*futures)
                return
            except KafkaError as exc:
                log.warning("publishing failed (%r); retrying in %.1fs", exc, delay)
                broken = isinstance(exc, FATAL_TO_PRODUCER) or (
                    producer is not None and _sender_stopped(producer)
                )
                if broken and producer is not None and producer is self._producer:
                    # The producer's sender gave up (an idempotent producer whose sequence
                    # the broker lost, e.g. across a broker restart): start a new one.
                    await self._discard()
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)

    async def _discard(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), timeout=5)
            except Exception as exc:  # a broken producer may fail to stop: drop it anyway
                log.warning("discarding the producer: %r", exc)


def keyed_partition(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's default partitioner with each key's hash remembered (``key_hash``, the
    cache the intake fills: its murmur2 is pure Python)."""
    if key is None:
        chosen: int = DefaultPartitioner()(key, all_partitions, available)
        return chosen
    return all_partitions[key_hash(key) % len(all_partitions)]


def _sender_stopped(producer: AIOKafkaProducer) -> bool:
    """aiokafka keeps no public flag for a producer whose background sender died (it then
    fails every send); its sender task is the only place that tells."""
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return task is not None and task.done()
