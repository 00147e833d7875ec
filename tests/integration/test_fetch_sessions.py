"""A consumer fetching as the worker does (streams/kafka/fetching.py: incremental sessions, and
gathering while records keep coming) against a real broker:
every record once and in order, through rounds of fetches, a seek back, and a partition
paused and resumed (it leaves the session and joins it again). Apache Kafka grants
sessions; the embedded broker (Tansu) is read in full fetches, as before."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streams.dev.services import Endpoints
from streams.kafka import fetching
from streams.kafka.fetching import FetchPolicy
from streams.kafka.topics import create_topics
from tests.integration.worker_harness import produce

PARTITIONS = 4


async def _read(
    consumer: AIOKafkaConsumer, n: int, seen: list[tuple[TopicPartition, int, bytes]]
) -> None:
    async with asyncio.timeout(30):
        target = len(seen) + n
        while len(seen) < target:
            batches = await consumer.getmany(timeout_ms=200)
            if batches:
                # the reply that brought them is the last one (no fetch while they wait):
                # the next fetch gathers
                (node,) = consumer._fetcher._client.nodes.values()
                assert node.records_came
            seen.extend((tp, r.offset, r.value or b"") for tp, rs in batches.items() for r in rs)
    # nothing more comes (no record twice)
    batches = await consumer.getmany(timeout_ms=300)
    seen.extend((tp, r.offset, r.value or b"") for tp, rs in batches.items() for r in rs)


def _values(seen: list[tuple[TopicPartition, int, bytes]], tp: TopicPartition) -> list[bytes]:
    return [v for t, _, v in seen if t == tp]


@pytest.mark.timeout(120)
async def test_every_record_once_in_order_through_seeks_and_pauses(
    endpoints: Endpoints, test_token: str
) -> None:
    bootstrap = endpoints.kafka_bootstrap
    topics = [f"{test_token}-a", f"{test_token}-b"]
    await create_topics(bootstrap, topics, PARTITIONS)
    tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    # the worker's policy: sessions, and fetches gathering while records keep coming
    fetching.use(consumer, FetchPolicy(gather_ms=20))
    await consumer.start()
    seen: list[tuple[TopicPartition, int, bytes]] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        sent: dict[TopicPartition, list[bytes]] = {tp: [] for tp in tps}

        def round_of(r: int, only: list[TopicPartition]) -> list[tuple[str, None, bytes, int]]:
            for tp in only:
                sent[tp].append(f"{tp.topic}/{tp.partition}/{r}".encode())
            return [(tp.topic, None, sent[tp][-1], tp.partition) for tp in only]

        # Rounds of records, each to some partitions only: most fetches find most
        # partitions with nothing new.
        for r in range(6):
            only = tps[r % 3 :: 3]
            await produce(bootstrap, round_of(r, only))
            await _read(consumer, len(only), seen)

        # A seek back: the partition's fetch offset moves backwards within the session.
        first = tps[0]
        before = _values(seen, first)
        consumer.seek(first, 0)
        await _read(consumer, len(before), seen)
        assert _values(seen, first) == before + before

        # A paused partition leaves the session; resumed, it is read from its position.
        paused = tps[1]
        consumer.pause(paused)
        await produce(bootstrap, round_of(6, [paused, tps[2]]))
        await _read(consumer, 1, seen)
        assert seen[-1][0] == tps[2]
        consumer.resume(paused)
        await _read(consumer, 1, seen)
        assert seen[-1][0] == paused

        for tp in tps:
            offsets = [o for t, o, _ in seen if t == tp]
            values = _values(seen, tp)
            if tp == first:
                offsets, values = offsets[: len(before)], values[: len(before)]
            assert offsets == list(range(len(offsets))), tp
            assert values == sent[tp], tp

        # Partitions a reply leaves out were polled too: Faust reads their poll time to
        # tell a stalled fetcher from a quiet partition.
        mark = int(1000 * time.time())
        assert not await consumer.getmany(timeout_ms=500)
        assignment = consumer._fetcher._subscriptions.subscription.assignment
        assert all(assignment.state_value(tp).timestamp >= mark for tp in tps)

        client = consumer._fetcher._client
        assert isinstance(client, fetching.PolicyClient)
        (node,) = client.nodes.values()
        assert not node.records_came  # the last fetches found nothing: no gathering now
        if os.environ.get("ENGAGEMENT_TEST_KAFKA_BOOTSTRAP"):  # Apache Kafka: incremental
            assert node.session.id != 0 and node.session.epoch > 5
            assert set(node.session.offsets) == set(tps)
    finally:
        await consumer.stop()


@pytest.mark.timeout(120)
async def test_an_answer_discarded_after_a_seek_leaves_no_end_offset_unknown(
    endpoints: Endpoints, test_token: str
) -> None:
    # aiokafka drops a partition's answer when the partition was moved while the fetch was
    # out (as the worker's resume position moves it after Faust's seek to the committed
    # offset). The session then holds the partition with the broker knowing its end, so
    # the broker names it again only with new records, while aiokafka never learned that
    # end: the event clock waits on a partition whose end is unknown, and the shard stalls
    # (found by the fault suite, on Apache Kafka).
    bootstrap = endpoints.kafka_bootstrap
    topic = f"{test_token}-a"
    await create_topics(bootstrap, [topic], PARTITIONS)
    tp = TopicPartition(topic, 0)
    await produce(bootstrap, [(topic, None, b"x", 0)])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    fetching.use(consumer, FetchPolicy(gather_ms=20))
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        deadline = time.monotonic() + 10
        for _ in range(10_000_000):  # turns of the loop, until the fetcher sent its fetch
            if consumer._fetcher._in_flight or time.monotonic() > deadline:
                break
            await asyncio.sleep(0)
        assert consumer._fetcher._in_flight
        # The fetch at offset 0 is out (its answer is processed only when this test
        # yields): the answer to it will not match the position any more.
        consumer.seek(tp, 1)
        async with asyncio.timeout(20):
            while consumer.highwater(tp) is None:
                assert not await consumer.getmany(timeout_ms=100)
        assert consumer.highwater(tp) == 1
        if os.environ.get("ENGAGEMENT_TEST_KAFKA_BOOTSTRAP"):  # Apache Kafka: sessions
            (node,) = consumer._fetcher._client.nodes.values()
            assert node.session.id != 0 and node.session.offsets == {tp: 1}
    finally:
        await consumer.stop()
