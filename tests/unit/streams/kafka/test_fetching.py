"""Incremental fetch sessions' bookkeeping (streams/kafka/fetching.py), on aiokafka's own request
and response structures: what each fetch names, and what a reply does to the session."""

from __future__ import annotations

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.protocol.fetch import (
    FetchRequest,
    FetchRequest_v4,
    FetchRequest_v11,
    FetchResponse_v11,
)
from aiokafka.structs import TopicPartition

from streams.kafka import fetching, seam
from streams.kafka.fetching import INITIAL_EPOCH, FetchPolicy, FetchSession, NodeFetching

MAX_BYTES = 1_048_576


def _fetch(offsets: dict[tuple[str, int], int]) -> FetchRequest:
    topics: dict[str, list[tuple[int, int, int]]] = {}
    for (topic, partition), offset in offsets.items():
        topics.setdefault(topic, []).append((partition, offset, MAX_BYTES))
    return FetchRequest(100, 1, 52_428_800, 0, list(topics.items()))


def _reply(session_id: int, error_code: int = 0) -> FetchResponse_v11:
    return FetchResponse_v11(0, error_code, session_id, [])


def _sent(request: FetchRequest, version: type = FetchRequest_v11) -> FetchRequest_v11:
    struct = request.build(version)
    # what goes on the wire decodes to what was meant
    decoded: FetchRequest_v11 = version.decode(struct.encode())
    return decoded


def test_a_session_is_asked_for_then_fetches_name_only_what_changed() -> None:
    session = FetchSession()
    first = session.request(_fetch({("a", 0): 5, ("a", 1): 7, ("b", 0): 0}))
    wire = _sent(first)
    assert (wire.session_id, wire.session_epoch) == (0, INITIAL_EPOCH)
    assert sorted((t, p[0]) for t, ps in wire.topics for p in ps) == [
        ("a", 0), ("a", 1), ("b", 0)
    ]  # fmt: skip
    assert session.answered(first, _reply(42))
    assert (session.id, session.epoch) == (42, 1)

    # a:0 read on to 9; a:1 unchanged; b:0 left out (its records not consumed yet)
    second = session.request(_fetch({("a", 0): 9, ("a", 1): 7}))
    wire = _sent(second)
    assert (wire.session_id, wire.session_epoch) == (42, 1)
    assert wire.topics == [("a", [(0, -1, 9, -1, MAX_BYTES)])]
    assert wire.forgotten_topics_data == [("b", [0])]
    # aiokafka reads the reply by every partition fetched, not only the ones named
    assert second.topics == [("a", [(0, 9, MAX_BYTES), (1, 7, MAX_BYTES)])]
    assert session.answered(second, _reply(42))
    assert session.epoch == 2

    # b:0 joins again at its position; nothing else moved
    third = session.request(_fetch({("a", 0): 9, ("a", 1): 7, ("b", 0): 3}))
    wire = _sent(third)
    assert wire.topics == [("b", [(0, -1, 3, -1, MAX_BYTES)])]
    assert wire.forgotten_topics_data == []

    # nothing changed at all: an empty incremental fetch (the broker waits on the session)
    assert session.answered(third, _reply(42))
    fourth = _sent(session.request(_fetch({("a", 0): 9, ("a", 1): 7, ("b", 0): 3})))
    assert (fourth.topics, fourth.forgotten_topics_data, fourth.session_epoch) == ([], [], 3)


def test_a_session_error_or_a_refusal_means_full_fetches_again() -> None:
    session = FetchSession()
    request = session.request(_fetch({("a", 0): 1}))
    _sent(request)
    assert not session.answered(request, _reply(0))  # no session granted (Tansu)
    assert session.id == 0
    request = session.request(_fetch({("a", 0): 1}))
    assert _sent(request).session_epoch == INITIAL_EPOCH

    assert session.answered(request, _reply(9))
    request = session.request(_fetch({("a", 0): 1}))
    _sent(request)
    assert not session.answered(request, _reply(9, error_code=71))  # INVALID_FETCH_SESSION_EPOCH
    assert (session.id, session.epoch, session.offsets) == (0, INITIAL_EPOCH, {})
    wire = _sent(session.request(_fetch({("a", 0): 1})))
    assert (wire.session_id, wire.session_epoch, wire.topics) == (
        0, INITIAL_EPOCH, [("a", [(0, -1, 1, -1, MAX_BYTES)])]
    )  # fmt: skip


def test_a_broker_without_sessions_gets_full_sessionless_fetches() -> None:
    session = FetchSession()
    request = session.request(_fetch({("a", 0): 1, ("a", 1): 2}))
    wire = request.build(FetchRequest_v4)
    assert wire.topics == [("a", [(0, 1, MAX_BYTES), (1, 2, MAX_BYTES)])]
    assert not session.answered(request, _reply(5))
    assert session.id == 0


def test_the_epoch_wraps_to_one_not_to_the_initial_epoch() -> None:
    session = FetchSession(id=3, epoch=2**31 - 1, offsets={TopicPartition("a", 0): 1})
    request = session.request(_fetch({("a", 0): 1}))
    assert _sent(request).session_epoch == 2**31 - 1
    assert session.answered(request, _reply(3))
    assert session.epoch == 1 != INITIAL_EPOCH


def test_fetches_gather_only_while_records_keep_coming() -> None:
    node = NodeFetching()
    policy = FetchPolicy(gather_ms=10, gather_bytes=1_000_000)
    idle = node.request(policy, _fetch({("a", 0): 1}))
    assert (idle._max_wait_ms, idle._min_bytes) == (100, 1)  # the consumer's own bounds
    assert isinstance(idle, fetching.SessionFetchRequest)

    node.records_came = True
    busy = _sent(node.request(policy, _fetch({("a", 0): 1})))
    assert (busy.max_wait_time, busy.min_bytes) == (10, 1_000_000)

    short = _fetch({("a", 0): 1})
    short._max_wait_ms = 5  # a consumer that never waits longer than 5 ms
    assert node.request(policy, short)._max_wait_ms == 5

    never = node.request(FetchPolicy(sessions=False, gather_ms=0), _fetch({("a", 0): 1}))
    assert type(never) is FetchRequest
    assert (never._max_wait_ms, never._min_bytes) == (100, 1)


def test_the_patched_fetcher_is_still_checked_by_its_own_sources() -> None:
    fetching.install()
    assert Fetcher._get_actions_per_node is not fetching._ORIGINALS["_get_actions_per_node"]
    # The seam reads the wrapped methods' sources: a worker started after a first one
    # patched the fetcher in the same process still passes its check.
    assert seam.differing("batches") == []
