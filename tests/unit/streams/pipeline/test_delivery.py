"""Alert delivery in the background: in order, out of the outbox once sent (by the next
commit, or after a linger), bounded, retried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from streams.pipeline.delivery import MAX_REMOVED_PER_COMMIT, AlertDelivery, SentAlerts
from streams.state.store import OutboxEntry

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
    assert kafka.sent == [] and all(delivery.handles(e) for e in entries(1, 2, 3, 4, 5))
    kafka.gate.set()
    await asyncio.wait_for(delivery.drained(), 5)
    assert kafka.sent == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    assert kafka.deleted == kafka.sent
    assert not any(delivery.handles(e) for e in entries(1, 2, 3, 4, 5))
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


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_sent_entries_a_commit_removes_are_never_deleted_by_the_delivery() -> None:
    kafka = Kafka()
    sent = SentAlerts()
    delivery = AlertDelivery(kafka.send, kafka.delete, sent=sent, linger_s=0.3)
    await delivery.submit([*entries(1, 2, shard=4), *entries(3, shard=5)])
    await wait_until(lambda: len(sent) == 3, "Kafka's acknowledgement")
    # Sent, not yet out of the outbox: still this worker's, so the relay leaves them.
    assert all(delivery.handles(e) for e in [*entries(1, 2, shard=4), *entries(3, shard=5)])
    assert sent.ids(4) == ["1-0", "2-0"] and sent.ids(5) == ["3-0"] and sent.ids(6) == []
    sent.removed(4, sent.ids(4))  # what shard 4's next commit does
    sent.removed(5, sent.ids(5))
    await asyncio.wait_for(delivery.drained(), 5)
    assert kafka.sent == ["1-0", "2-0", "3-0"] and kafka.deleted == []
    assert not any(delivery.handles(e) for e in [*entries(1, 2, shard=4), *entries(3, shard=5)])
    await delivery.stop()


async def test_sent_entries_no_commit_takes_are_deleted_after_the_linger() -> None:
    kafka = Kafka()
    sent = SentAlerts()
    delivery = AlertDelivery(kafka.send, kafka.delete, sent=sent, linger_s=0.2)
    loop = asyncio.get_running_loop()
    await delivery.submit(entries(1, 2, shard=7))
    await wait_until(lambda: len(sent) == 2, "Kafka's acknowledgement")
    acknowledged = loop.time()
    await wait_until(lambda: kafka.deleted == ["1-0", "2-0"], "the lingering entries' XDEL")
    assert loop.time() - acknowledged >= 0.2 * 0.9, "deleted before the linger was up"
    assert len(sent) == 0
    await asyncio.wait_for(delivery.drained(), 5)
    await delivery.stop()


async def test_entries_sent_during_a_linger_are_sent_at_once_and_deleted_later() -> None:
    kafka = Kafka()
    delivery = AlertDelivery(kafka.send, kafka.delete, linger_s=0.5)
    await delivery.submit(entries(1))
    await wait_until(lambda: kafka.sent == ["1-0"], "the first send")
    await delivery.submit(entries(2))
    await wait_until(lambda: kafka.sent == ["1-0", "2-0"], "the second send")
    assert kafka.deleted == [], "the first entry's linger is not up yet"
    await wait_until(lambda: sorted(kafka.deleted) == ["1-0", "2-0"], "the lingering XDELs")
    await delivery.stop()


def test_a_commit_removes_at_most_its_share_of_sent_entries_oldest_first() -> None:
    sent = SentAlerts()
    many = entries(*range(MAX_REMOVED_PER_COMMIT + 5), shard=2)
    sent.add(many, 1.0)
    first = sent.ids(2)
    assert first == [e.entry_id for e in many[:MAX_REMOVED_PER_COMMIT]]
    sent.removed(2, first)
    assert sent.ids(2) == [e.entry_id for e in many[MAX_REMOVED_PER_COMMIT:]]
    sent.removed(2, sent.ids(2))
    assert len(sent) == 0 and sent.oldest() is None


async def test_at_a_stop_sent_entries_are_deleted_without_waiting_for_the_linger() -> None:
    kafka = Kafka()
    sent = SentAlerts()
    delivery = AlertDelivery(kafka.send, kafka.delete, sent=sent, linger_s=60.0)
    await delivery.submit(entries(1, 2, shard=3))
    await wait_until(lambda: len(sent) == 2, "Kafka's acknowledgement")
    assert kafka.deleted == []
    await asyncio.wait_for(delivery.remove_sent(), 1)
    assert kafka.deleted == ["1-0", "2-0"] and len(sent) == 0
    await delivery.stop()
