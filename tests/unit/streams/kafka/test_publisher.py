from __future__ import annotations

import asyncio
import itertools

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from streams.kafka.publisher import PacedMetadataClient, Publisher, keyed_partition
from streams.pipeline.intake import shard_of

partition_lists = st.integers(1, 64).map(lambda n: list(range(n)))


@given(st.binary(max_size=64), partition_lists)
def test_a_key_goes_where_aiokafkas_default_partitioner_sends_it(
    key: bytes, partitions: list[int]
) -> None:
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert keyed_partition(key, partitions, partitions) == expected
    assert keyed_partition(key, partitions, partitions) == expected  # remembered


def test_a_customers_alerts_land_on_the_partition_of_its_owner_shard() -> None:
    keys = [f"customer-{i}" for i in range(200)]
    assert {shard_of(k, 8) for k in keys} == set(range(8))  # every partition is tried
    for k in keys:
        assert keyed_partition(k.encode(), list(range(8)), []) == shard_of(k, 8)


def test_no_key_picks_an_available_partition() -> None:
    assert keyed_partition(None, [0, 1, 2, 3], [2]) == 2


class _Client:
    """What the producer's sender uses of aiokafka's client for metadata: each update
    fails (a broker down) until ``up``, answered at once as a refused connection is."""

    _retry_backoff = 0.05

    def __init__(self) -> None:
        self.up = False
        self.started: list[float] = []

    def force_metadata_update(self) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        self.started.append(loop.time())
        done = loop.create_future()
        done.set_result(self.up)
        return done


async def test_metadata_updates_wait_the_backoff_after_one_failed() -> None:
    client = _Client()
    paced = PacedMetadataClient(client)
    # the sender's loop asking again as soon as each answer comes
    for _ in range(4):
        assert await paced.force_metadata_update() is False
    client.up = True
    assert await paced.force_metadata_update() is True
    gaps = [b - a for a, b in itertools.pairwise(client.started)]
    assert len(gaps) == 4 and min(gaps) >= client._retry_backoff - 0.005
    # after a success the next one goes at once
    start = asyncio.get_running_loop().time()
    assert await paced.force_metadata_update() is True
    assert client.started[-1] - start < client._retry_backoff


async def test_callers_meanwhile_share_the_waiting_update() -> None:
    client = _Client()
    paced = PacedMetadataClient(client)
    assert await paced.force_metadata_update() is False
    first, second = paced.force_metadata_update(), paced.force_metadata_update()
    assert first is second
    await first
    assert len(client.started) == 2


async def test_the_publishers_producer_sends_through_the_paced_client() -> None:
    publisher = Publisher("127.0.0.1:1", "dead", "rerouted", idempotence=False)
    producer = publisher._unstarted_producer()  # what start() starts
    try:
        assert isinstance(producer._sender.client, PacedMetadataClient)
        assert producer._sender.client._client is producer.client
    finally:
        await producer.client.close()
