from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from streams.intake import shard_of
from streams.publisher import keyed_partition

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
