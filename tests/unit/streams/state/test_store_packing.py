"""Commands packed by hiredis (streams.state.redis_client._HiredisPacking) are the bytes
redis-py's own asyncio packer makes, and what that packer refuses it still refuses with its
own error."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import DataError

from streams.state import redis_client
from streams.state.redis_client import _HiredisPacking, connect_redis


class _Packed(_HiredisPacking, Connection):
    pass


PACKED, PYTHON = _Packed(), Connection()

arguments = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.binary(min_size=7000, max_size=7000),  # above redis-py's buffer cutoff
)


def python_bytes(*args: object) -> bytes:
    return b"".join(AbstractConnection.pack_command(PYTHON, *args))  # type: ignore[arg-type]  # the bad inputs are the point


def packed_bytes(*args: object) -> bytes:
    return b"".join(PACKED.pack_command(*args))  # type: ignore[arg-type]  # the bad inputs are the point


@given(st.sampled_from(["EVALSHA", b"EVALSHA", "CONFIG GET", b"CONFIG GET"]), st.lists(arguments))
def test_the_same_bytes_as_redis_pys_packer(name: str | bytes, args: list[object]) -> None:
    assert packed_bytes(name, *args) == python_bytes(name, *args)


def test_a_commit_call_is_packed_by_hiredis(monkeypatch: pytest.MonkeyPatch) -> None:
    packs: list[tuple[object, ...]] = []

    def spy(command: tuple[object, ...]) -> bytes:
        packs.append(command)
        packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]  # its stub says a 1-tuple
        return packed

    monkeypatch.setattr(redis_client, "_hiredis_pack", spy)
    args = ["EVALSHA", "0" * 40, "5", "eng:{s1}:meta", "eng:{s1}:c:é", "7", "", b"\x00\r\n"]
    assert packed_bytes(*args) == python_bytes(*args)
    assert packs == [(b"EVALSHA", *args[1:])]


@pytest.mark.parametrize("bad", [None, True, object()])
def test_what_redis_py_refuses_is_refused_alike(bad: object) -> None:
    with pytest.raises(DataError, match="Invalid input of type"):
        packed_bytes("SET", "k", bad)


def test_a_memoryview_goes_through_redis_pys_packer() -> None:
    view = memoryview(b"x" * 10)
    assert packed_bytes("SET", "k", view) == python_bytes("SET", "k", view)


def test_a_string_hiredis_cannot_encode_fails_as_before() -> None:
    with pytest.raises(UnicodeEncodeError):
        packed_bytes("SET", "k", "\ud800")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:1/0", Connection),
        ("rediss://127.0.0.1:1/0", SSLConnection),
        ("unix:///tmp/none.sock", UnixDomainSocketConnection),
    ],
)
def test_the_store_client_packs_with_hiredis(url: str, kind: type) -> None:
    pool = connect_redis(url).connection_pool
    assert issubclass(pool.connection_class, _HiredisPacking)
    assert issubclass(pool.connection_class, kind)
