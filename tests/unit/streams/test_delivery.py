"""Alert delivery in the background: in order, deleted once sent, bounded, retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from streams.delivery import AlertDelivery
from streams.store import OutboxEntry

pytestmark = pytest.mark.timeout(10)


def entries(*ids: int, shard: int = 0) -> list[OutboxEntry]:
    return [OutboxEntry(shard, f"{i}-0", "alerts", b"c", f"alert {i}".encode()) for i in ids]


class Kafka:
    """Records what was sent and deleted; ``gate`` holds sends back; ``failures`` makes the
    next sends raise."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.deleted: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = 0

    async def send(self, batch: Sequence[OutboxEntry]) -> None:
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("broker said no")
        self.sent.extend(e.entry_id for e in batch)

    async def delete(self, batch: Sequence[OutboxEntry]) -> None:
        self.deleted.extend(e.entry_id for e in batch)


async def test_submit_does_not_wait_for_kafka_and_alerts_go_out_in_order() -> None:
    kafka = Kafka()
    kafka.gate.clear()
    delivery = AlertDelivery(kafka.send, kafka.delete, max_per_send=2)
    await asyncio.wait_for(delivery.submit(entries(1, 2, 3)), 1)  # returns with Kafka stuck
    await delivery.submit(entries(4, 5))
    assert kafka.sent == [] and all(delivery.is_unsent(e) for e in entries(1, 2, 3, 4, 5))
    kafka.gate.set()
    await asyncio.wait_for(delivery.drained(), 5)
    assert kafka.sent == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    assert kafka.deleted == kafka.sent
    assert not any(delivery.is_unsent(e) for e in entries(1, 2, 3, 4, 5))
    await delivery.stop()


async def test_an_entry_already_unsent_is_not_queued_twice() -> None:
    kafka = Kafka()
    kafka.gate.clear()
    delivery = AlertDelivery(kafka.send, kafka.delete)
    await delivery.submit(entries(1, 2))
    await delivery.submit(entries(2, 3))  # e.g. the relay offering what the agent sends
    kafka.gate.set()
    await asyncio.wait_for(delivery.drained(), 5)
    assert kafka.sent == ["1-0", "2-0", "3-0"]
    await delivery.stop()


async def test_submit_waits_while_the_backlog_is_over_its_bound() -> None:
    kafka = Kafka()
    kafka.gate.clear()
    delivery = AlertDelivery(kafka.send, kafka.delete, max_unsent=3)
    await delivery.submit(entries(1, 2, 3))
    blocked = asyncio.create_task(delivery.submit(entries(4)))
    await asyncio.sleep(0)  # it runs up to its wait; only the closed gate could free it
    assert not blocked.done(), "4 unsent > 3: the caller must wait"
    kafka.gate.set()
    await asyncio.wait_for(blocked, 5)
    await asyncio.wait_for(delivery.drained(), 5)
    assert kafka.sent == ["1-0", "2-0", "3-0", "4-0"]
    await delivery.stop()


async def test_a_failed_send_is_retried_with_the_same_entries() -> None:
    kafka = Kafka()
    kafka.failures = 2
    delivery = AlertDelivery(kafka.send, kafka.delete, retry_s=0.01)
    await delivery.submit(entries(1, 2, shard=3))
    await asyncio.wait_for(delivery.drained(), 5)
    assert kafka.sent == ["1-0", "2-0"] and kafka.deleted == ["1-0", "2-0"]
    await delivery.stop()


async def test_entries_of_different_shards_with_the_same_id_are_distinct() -> None:
    kafka = Kafka()
    delivery = AlertDelivery(kafka.send, kafka.delete)
    await delivery.submit([*entries(1, shard=0), *entries(1, shard=1)])
    await asyncio.wait_for(delivery.drained(), 5)
    assert kafka.sent == ["1-0", "1-0"]
    await delivery.stop()
