"""The shard, and Kafka partition, that owns a customer: Kafka's default partitioner.

Here rather than in streams/ so that it is compiled with the scoring core: every event is
routed by it, and aiokafka's murmur2 is pure Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    # 64-bit machine integers once compiled (mypyc); plain ints in Python. Every product
    # below is of two numbers under 2**32 and 2**31, so it fits.
    from mypy_extensions import i64

_SEED: Final = 0x9747B28C
_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """``org.apache.kafka.common.utils.Utils.murmur2`` of ``data``, as an unsigned 32-bit
    int (aiokafka's ``murmur2`` gives the same; tests/unit/streams/test_store_keys.py checks
    both against the Java client's own test vectors)."""
    length: i64 = len(data)
    h: i64 = (_SEED ^ length) & _MASK
    end: i64 = length - length % 4
    i: i64 = 0
    k: i64 = 0
    while i < end:
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
        i += 4
    extra: i64 = length - end
    if extra >= 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h
