"""The embedded (or CI-provided) Kafka and Redis work, and `services up/down/status` behave."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.dev.services import (
    STATE_FILE,
    Endpoints,
    cmd_services,
    services_down,
    services_status,
    services_up,
)


def _pid_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if _zombie(pid):  # exited; only waiting for its parent (maybe us) to collect it
            return True
        time.sleep(0.02)
    return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _recorded_pids(state_dir: Path) -> dict[str, int]:
    state = json.loads((state_dir / STATE_FILE).read_text())
    return {name: int(record["pid"]) for name, record in state.items()}


async def test_kafka_create_produce_consume_round_trip(
    endpoints: Endpoints, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.roundtrip"
    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        assert topic in await admin.list_topics()
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i % 2}".encode())
    finally:
        await producer.stop()

    # 6 s is the smallest session timeout Apache Kafka accepts by default; Tansu holds a new
    # group's join for about half the session timeout, so larger values slow this test down.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=endpoints.kafka_bootstrap,
        group_id=f"{topic_prefix}.group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        received: dict[bytes, bytes] = {}
        deadline = time.monotonic() + 30
        while len(received) < 4 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                received.update((r.value, r.key) for r in records if r.value and r.key)
        assert received == {f"v{i}".encode(): f"k{i % 2}".encode() for i in range(4)}
        await consumer.commit()
        committed = [await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)]
        assert sum(c or 0 for c in committed) == 4
    finally:
        await consumer.stop()


async def test_redis_set_get(endpoints: Endpoints, namespace: str) -> None:
    client = aioredis.Redis.from_url(endpoints.redis_url)
    try:
        key = f"{namespace}:probe"
        assert await client.set(key, b"hello", ex=60)
        assert await client.get(key) == b"hello"
        assert await client.delete(key) == 1
    finally:
        await client.aclose()


def test_services_up_status_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir = tmp_path / "state"
    assert services_status(state_dir) is None
    try:
        first = services_up(state_dir)
        pids = _recorded_pids(state_dir)
        assert set(pids) == {"kafka", "redis"}
        assert (state_dir / "tansu.log").is_file() and (state_dir / "valkey.log").is_file()
        assert redis.Redis.from_url(first.redis_url).ping()

        again = services_up(state_dir)
        assert again == first
        assert _recorded_pids(state_dir) == pids  # nothing new was started
        assert services_status(state_dir) == first

        assert cmd_services("status", state_dir) == 0
        assert capsys.readouterr().out.splitlines() == first.export_lines()
        assert first.export_lines()[0] == f"ENGAGEMENT_KAFKA_BOOTSTRAP={first.kafka_bootstrap}"
    finally:
        stopped = services_down(state_dir)
    assert stopped
    assert all(_pid_gone(pid) for pid in pids.values())
    assert not (state_dir / STATE_FILE).exists()
    assert services_status(state_dir) is None
    assert services_down(state_dir) is False
    assert cmd_services("status", state_dir) == 1
    assert capsys.readouterr().out.strip() == "not running"


def test_services_up_replaces_a_stale_record(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    try:
        first = services_up(state_dir)
        pids = _recorded_pids(state_dir)
        os.kill(pids["redis"], signal.SIGKILL)  # half of the pair dies behind our back
        assert services_status(state_dir) is None

        second = services_up(state_dir)
        new_pids = _recorded_pids(state_dir)
        assert second != first
        assert new_pids["redis"] != pids["redis"]
        assert _pid_gone(pids["kafka"])  # the survivor of the stale pair was stopped
        assert redis.Redis.from_url(second.redis_url).ping()
    finally:
        services_down(state_dir)
    assert all(_pid_gone(pid) for pid in new_pids.values())
