"""Running real workers as subprocesses against the test broker and Redis, and talking
to them the way users do: topics in, topics out, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streams.dev.services import Endpoints
from streams.dev.workers import WorkerProcess
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def worker_env(
    endpoints: Endpoints, token: str, state_dir: Path, **overrides: str
) -> dict[str, str]:
    env = {
        "ENGAGEMENT_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "ENGAGEMENT_REDIS_URL": endpoints.redis_url,
        "ENGAGEMENT_NAMESPACE": token,
        "ENGAGEMENT_APP_ID": f"{token}-scorer",
        "ENGAGEMENT_CLOCK": "event",
        "ENGAGEMENT_PARTITIONS": "4",
        "ENGAGEMENT_SESSION_TIMEOUT_S": "6",
        "ENGAGEMENT_SWEEP_INTERVAL_S": "0.2",
        "ENGAGEMENT_OUTBOX_RELAY_INTERVAL_S": "0.3",
        "ENGAGEMENT_STATE_DIR": str(state_dir),
        # On for Apache Kafka (the real-services run sets it); Tansu has no InitProducerId.
        "ENGAGEMENT_PRODUCER_IDEMPOTENCE": os.environ.get(
            "ENGAGEMENT_TEST_PRODUCER_IDEMPOTENCE", "false"
        ),
    }
    for name in ("clickstream", "purchases", "feedback", "rerouted", "churn_risk",
                 "interventions", "deadletter"):  # fmt: skip
        env[f"ENGAGEMENT_TOPIC_{name.upper()}"] = f"{token}.{name}"
    env.update(overrides)
    return env


def settings_of(env: dict[str, str]) -> Settings:
    prefix = "ENGAGEMENT_"
    fields = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
    return Settings.model_validate(fields)


@contextmanager
def running_workers(
    env: dict[str, str], count: int, log_dir: Path
) -> Iterator[list[WorkerProcess]]:
    """Start ``count`` workers in one group and wait until each owns shards."""
    workers: list[WorkerProcess] = []
    try:
        for i in range(count):
            workers.append(WorkerProcess.start(env, log_dir / f"worker{i}.log", cwd=REPO))
        for w in workers:
            wait_for(lambda w=w: bool(w.owned_shards()), 90, "worker owns shards", w)
        if count > 1:
            wait_for(lambda: _disjoint_cover(workers, int(env["ENGAGEMENT_PARTITIONS"])),
                     90, "workers split the shards", workers[0])  # fmt: skip
        yield workers
    finally:
        for w in workers:
            w.process.terminate()  # all at once: the group need not rebalance to each
        for w in workers:
            w.stop()


def _disjoint_cover(workers: Sequence[WorkerProcess], partitions: int) -> bool:
    owned = [set(w.owned_shards()) for w in workers]
    union = set().union(*owned)
    return all(owned) and union == set(range(partitions)) and sum(map(len, owned)) == partitions


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, worker: WorkerProcess | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(f"worker exited while waiting for {what}:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            tail = worker.log_tail() if worker is not None else ""
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")
        time.sleep(0.1)


async def poll(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


async def produce(
    bootstrap: str, records: Sequence[tuple[str, str | bytes | None, bytes, int | None]]
) -> None:
    """(topic, key, value, partition or None for the default partitioner)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = []
        for topic, key, value, partition in records:
            k = key.encode() if isinstance(key, str) else key
            futures.append(await producer.send(topic, value, key=k, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_until(
    bootstrap: str,
    topics: Sequence[str],
    done: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    timeout_s: float = 60,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read the topics from the beginning until ``done(all read so far)`` holds."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    seen: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topics}: {len(seen)} records")
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                seen.extend(records)
    finally:
        await consumer.stop()
    return seen


def event(event_id: str, customer_id: str, day: float, type_: str, **fields: Any) -> bytes:
    """An input event ``day`` days after 2026-01-01T00:00:00Z."""
    seconds = int(day * 86_400)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(1_767_225_600 + seconds))
    body = {"event_id": event_id, "customer_id": customer_id, "occurred_at": stamp,
            "type": type_, **fields}  # fmt: skip
    return orjson.dumps(body)
