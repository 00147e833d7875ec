"""The watch that asks for fresh metadata while input topics are missing from it
(streams/kafka/assignment.py), on aiokafka's own ClusterMetadata fed its own response structs."""

from __future__ import annotations

import logging

import pytest
from aiokafka.cluster import ClusterMetadata
from aiokafka.protocol.metadata import MetadataResponse_v0

from streams.kafka.assignment import MissingTopicsWatch, missing_topics

BROKERS = [(1, "127.0.0.1", 9092)]
LEADER_NOT_AVAILABLE = 5


def _known(*topics: str, not_led: tuple[str, ...] = ()) -> MetadataResponse_v0:
    led = [(0, t, [(0, p, 1, [1], [1]) for p in range(2)]) for t in topics]
    return MetadataResponse_v0(BROKERS, led + [(LEADER_NOT_AVAILABLE, t, []) for t in not_led])


class Client:
    """What the watch uses of aiokafka's client: its metadata, and a refresh that answers
    with the next of ``answers``."""

    def __init__(self, *answers: MetadataResponse_v0) -> None:
        self.cluster = ClusterMetadata()
        self.answers = list(answers)
        self.refreshes = 0

    async def force_metadata_update(self) -> bool:
        self.refreshes += 1
        self.cluster.update_metadata(self.answers.pop(0))
        return True


def _ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "streams.kafka.assignment"]


def test_missing_topics_are_those_without_partitions() -> None:
    cluster = ClusterMetadata()
    cluster.update_metadata(_known("a", not_led=("b",)))
    assert missing_topics(cluster, ["c", "b", "a"]) == ["b", "c"]


async def test_refreshes_while_topics_are_missing_and_stops_once_they_are_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Client(_known("a", not_led=("b",)), _known("a", not_led=("b",)), _known("a", "b"))
    watch = MissingTopicsWatch(["a", "b"])
    with caplog.at_level(logging.INFO, logger="streams.kafka.assignment"):
        # before any metadata (a worker starting): refreshed, not worth a warning yet
        assert await watch.check(client) == ["a", "b"]
        assert client.refreshes == 1 and not _ours(caplog)
        # still missing a check later: warned, and asked again
        assert await watch.check(client) == ["b"]
        assert client.refreshes == 2
        assert [r.levelname for r in _ours(caplog)] == ["WARNING"]
        assert "input topics b missing" in _ours(caplog)[0].getMessage()
        assert await watch.check(client) == ["b"]
        assert client.refreshes == 3 and len(_ours(caplog)) == 1  # warned once
        # back: no more refreshes, and said so
        assert await watch.check(client) == []
        assert await watch.check(client) == []
    assert client.refreshes == 3
    assert _ours(caplog)[-1].getMessage() == "input topics back in the consumer's cluster metadata"


async def test_the_refresh_runs_through_the_given_caller() -> None:
    # Faust's consumer thread runs aiokafka in its own loop: the worker hands the refresh
    # to that thread's call_thread.
    client = Client(_known("a"))
    called: list[object] = []

    async def call_thread(fun: object) -> object:
        called.append(fun)
        return await fun()  # type: ignore[operator]

    watch = MissingTopicsWatch(["a"])
    assert await watch.check(client, call_thread) == ["a"]
    assert called == [client.force_metadata_update] and client.refreshes == 1
    assert await watch.check(client, call_thread) == []
    assert len(called) == 1
