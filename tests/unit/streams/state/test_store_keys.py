"""Shard key layout and owner-shard hashing, without Redis.

A shard's commit script must touch keys of one Redis Cluster slot only, whatever the
customer ids look like; and a customer's shard must be the partition Kafka's Java default
partitioner picks for its id, so producers keyed by customer id write to the owner.
"""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from scoring.shards import murmur2
from scoring.state import CustomerState
from streams.pipeline.intake import shard_of
from streams.state.store import ShardKeys, ShardWrite, _commit_call

# Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
# testMurmur2: Utils.murmur2 of each key as the Java client computes it (signed int32).
KAFKA_MURMUR2_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

AWKWARD_IDS = [
    "c1",
    "{",
    "}",
    "{}",
    "{s9}",
    "}{s3}{",
    "a:b:c",
    ":{s1}:",
    "{ns}:{s2}:meta",
    "ümlaut-客户-🙂",
    " spaced id ",
    "x" * 256,
]


def _slot(key: str) -> int:
    return key_slot(key.encode())


def _commit_keys(namespace: str, shard: int, customer_ids: list[str]) -> list[str]:
    """The KEYS a shard commit passes to the script, built the way the store builds them."""
    write = ShardWrite(shard=shard, expected_epoch="0")
    for customer_id in customer_ids:
        write.states[customer_id] = CustomerState.new(customer_id, 1_700_000_000.0)
    keys, _args = _commit_call(ShardKeys(namespace, shard), write)
    return keys


@pytest.mark.parametrize("shard", [0, 1, 3, 17, 255])
@pytest.mark.parametrize("namespace", ["eng", "t0123abcd", "replay.2024-01:v2", "a_b-c"])
def test_every_key_of_a_shard_commit_is_in_one_cluster_slot(namespace: str, shard: int) -> None:
    keys = _commit_keys(namespace, shard, AWKWARD_IDS)
    layout = ShardKeys(namespace, shard)
    assert keys[:4] == [layout.meta, layout.due, layout.outbox, layout.kpi]
    assert keys[4:] == [layout.customer(c) for c in AWKWARD_IDS]
    slots = {_slot(k) for k in keys}
    assert slots == {_slot(f"s{shard}")}, {k: _slot(k) for k in keys}


@given(
    customer_id=st.text(min_size=1, max_size=64),
    shard=st.integers(min_value=0, max_value=1023),
)
def test_any_customer_id_lands_in_its_shards_slot(customer_id: str, shard: int) -> None:
    layout = ShardKeys("eng", shard)
    assert _slot(layout.customer(customer_id)) == _slot(layout.meta)


def test_customer_key_keeps_the_id_verbatim() -> None:
    layout = ShardKeys("eng", 2)
    assert layout.customer("a:{b}:c") == "eng:{s2}:c:a:{b}:c"


def test_different_shards_use_different_slots() -> None:
    slots = [_slot(ShardKeys("eng", s).meta) for s in range(64)]
    assert len(set(slots)) == len(slots)
    # The slot depends on the shard only, not on the namespace.
    assert slots == [_slot(ShardKeys("other.ns", s).meta) for s in range(64)]


@pytest.mark.parametrize(("key", "java"), sorted(KAFKA_MURMUR2_VECTORS.items()))
def test_murmur2_matches_kafkas_java_client(key: bytes, java: int) -> None:
    assert murmur2(key) == java & 0xFFFFFFFF
    assert aiokafka_murmur2(key) & 0xFFFFFFFF == java & 0xFFFFFFFF


@given(key=st.binary(max_size=80))
def test_murmur2_is_aiokafkas(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key) & 0xFFFFFFFF


@pytest.mark.parametrize(("key", "java"), sorted(KAFKA_MURMUR2_VECTORS.items()))
@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 7, 12, 64])
def test_shard_of_is_the_java_default_partition(key: bytes, java: int, partitions: int) -> None:
    # BuiltInPartitioner.partitionForKey: Utils.toPositive(Utils.murmur2(key)) % n
    assert shard_of(key.decode(), partitions) == (java & 0x7FFFFFFF) % partitions


@given(customer_id=st.text(min_size=1, max_size=64), shards=st.integers(1, 128))
def test_shard_of_agrees_with_aiokafkas_default_partitioner(customer_id: str, shards: int) -> None:
    partitions = list(range(shards))
    expected = DefaultPartitioner()(customer_id.encode(), partitions, partitions)
    assert shard_of(customer_id, shards) == expected
    assert 0 <= shard_of(customer_id, shards) < shards


def test_shard_of_is_stable() -> None:
    # Pinned: changing the hash would move every customer's state to another shard.
    pinned = {"21": 0, "foobar": 2, "abc": 3, "c1": 3, "customer-42": 1, "ümlaut": 3}
    assert {c: shard_of(c, 4) for c in pinned} == pinned
    assert shard_of("21", 12) == (-973932308 & 0x7FFFFFFF) % 12
