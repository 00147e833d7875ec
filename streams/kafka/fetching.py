"""How the worker's Kafka consumer fetches: its bounds, and incremental fetch sessions
(Kafka's KIP-227) for aiokafka's fetcher.

aiokafka sends every fetch with every assigned partition and the broker answers with every
one of them, records or not, each encoded and decoded in pure Python. The worker reads 32
partitions (four input topics of eight); when input is light every fetch is answered at its
first record, so that work is done hundreds of times a second for a few records each, a
large share of the worker's CPU (BENCHMARKS.md). In a
session the broker keeps the partitions and their fetch offsets between fetches: a request
names only the partitions whose fetch offset moved (or which joined), and lists those that
left; a response carries only the partitions with records or news. This is what Kafka's own
consumers do.

The broker never moves a session's fetch offset by itself, so a partition aiokafka leaves
out of a fetch (its fetched records not yet consumed, or paused) leaves the session and
joins it again at its position later, as in the Java client. A broker that grants no
session (session id 0; Tansu) gets full fetches, as before. A session error, a failed
request or one cancelled (its reply unknown) ends the session: the next fetch is full.
So does a fetched partition whose end offset (high watermark) aiokafka does not know after
a reply, e.g. when aiokafka dropped its answer because the partition was moved while the
fetch was out: the broker, which does know it, would name the partition again only with new
records, and the event clock waits on a partition whose end is unknown.

Gathering: a fetch answered at its first record brings two or three records when input is
light, and each fetch costs the consumer about the same CPU whatever it brings. So while
fetches keep returning records, the next one asks the broker to gather for up to
``gather_ms``; a fetch that comes back empty goes back to the consumer's own bounds
(answered at the first record, or after ``fetch_max_wait_ms``), so an idle consumer still
fetches rarely, and the first record after a quiet spell is not held back.

The patch wraps two private methods of aiokafka's Fetcher (aiokafka has no extension
point for its fetcher), for the consumers given a policy only; the sources it wraps are
checked by digest before the worker starts (streams/kafka/seam.py).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

INITIAL_EPOCH = 0
# The first FetchRequest version with sessions.
SESSION_VERSION = 7

Partitions = list[tuple[str, list[tuple[int, int, int]]]]


def _by_topic(items: Iterable[tuple[TopicPartition, Any]]) -> list[tuple[str, list[Any]]]:
    grouped: dict[str, list[Any]] = {}
    for tp, data in items:
        grouped.setdefault(tp.topic, []).append(data)
    return list(grouped.items())


# aiokafka's modules are untyped to mypy here (follow_imports=skip in pyproject.toml).
class SessionFetchRequest(FetchRequest):  # type: ignore[misc]
    """A fetch in a session: ``topics`` (what aiokafka reads the reply by) are all the
    partitions fetched, while the request sent names only ``changed`` and ``forgotten``."""

    def __init__(
        self,
        base: FetchRequest,
        session_id: int,
        epoch: int,
        changed: Partitions,
        forgotten: list[tuple[str, list[int]]],
        offsets: dict[TopicPartition, int],
    ) -> None:
        super().__init__(
            base._max_wait_ms,
            base._min_bytes,
            base._max_bytes,
            base._isolation_level,
            base.topics,
            rack_id=base._rack_id,
        )
        self.session_id, self.epoch = session_id, epoch
        self.changed, self.forgotten, self.offsets = changed, forgotten, offsets
        self.sent_version: int | None = None
        # When the broker answered it within the session (ms since the epoch).
        self.polled_at: int | None = None

    def build(self, request_struct_class: Any) -> Any:
        self.sent_version = request_struct_class.API_VERSION
        if self.sent_version < SESSION_VERSION:
            return super().build(request_struct_class)  # a full, sessionless fetch
        every: Partitions = self.topics
        self._topics = self.changed
        try:
            struct = super().build(request_struct_class)
        finally:
            self._topics = every
        struct.__dict__.update(
            session_id=self.session_id,
            session_epoch=self.epoch,
            forgotten_topics_data=self.forgotten,
        )
        return struct


@dataclass
class FetchSession:
    """One broker's session: its id, the epoch of the next request, and the fetch offset
    the broker holds for each partition in it."""

    id: int = 0
    epoch: int = INITIAL_EPOCH
    offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def request(self, base: FetchRequest) -> SessionFetchRequest:
        wanted = {
            TopicPartition(topic, p[0]): p for topic, partitions in base.topics for p in partitions
        }
        offsets = {tp: p[1] for tp, p in wanted.items()}
        if not self.id:  # a full fetch asking for a session
            return SessionFetchRequest(base, 0, INITIAL_EPOCH, base.topics, [], offsets)
        held = self.offsets
        changed = _by_topic((tp, p) for tp, p in wanted.items() if held.get(tp) != p[1])
        forgotten = _by_topic((tp, tp.partition) for tp in held if tp not in wanted)
        return SessionFetchRequest(base, self.id, self.epoch, changed, forgotten, offsets)

    def answered(self, request: SessionFetchRequest, response: Any) -> bool:
        """Takes the broker's reply to ``request``; whether the session holds (a reply of
        a broker without sessions, or a session error, ends it)."""
        if (
            request.sent_version is None
            or request.sent_version < SESSION_VERSION
            or response.error_code
            or not response.session_id
        ):
            self.end()
            return False
        self.id = response.session_id
        # After 2**31 - 1 the epoch starts again at 1 (0 would ask for a new session).
        self.epoch = 1 if request.epoch >= 2**31 - 1 else request.epoch + 1
        self.offsets = request.offsets
        return True

    def end(self) -> None:
        self.id, self.epoch, self.offsets = 0, INITIAL_EPOCH, {}


@dataclass(frozen=True)
class FetchPolicy:
    """How a consumer fetches beyond its bounds. ``sessions``: incremental fetch sessions.
    ``gather_ms``: while fetches keep returning records, each gathers up to this long (for
    ``gather_bytes``); a fetch that came back empty waits for the first record instead
    (the consumer's own bounds), so an idle consumer fetches rarely. 0: never gather."""

    sessions: bool = True
    gather_ms: int = 0
    gather_bytes: int = 1_048_576


@dataclass
class NodeFetching:
    """What fetching from one broker keeps between fetches."""

    session: FetchSession = field(default_factory=FetchSession)
    # whether the last reply carried records: the next fetch gathers
    records_came: bool = False

    def request(self, policy: FetchPolicy, base: FetchRequest) -> FetchRequest:
        if policy.gather_ms and self.records_came:
            # never longer than the consumer's own longest wait
            base._max_wait_ms = min(policy.gather_ms, base._max_wait_ms)
            base._min_bytes = max(base._min_bytes, policy.gather_bytes)
        return self.session.request(base) if policy.sessions else base


class PolicyClient:
    """The fetcher's client, fetching by ``policy``: it keeps each broker's session and
    whether its last reply carried records up to date with the replies."""

    def __init__(self, client: Any, policy: FetchPolicy) -> None:
        self._client, self.policy = client, policy
        self.nodes: dict[int, NodeFetching] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        if not isinstance(request, FetchRequest):
            return await self._client.send(node_id, request, **kwargs)
        node = self.nodes.setdefault(node_id, NodeFetching())
        try:
            response = await self._client.send(node_id, request, **kwargs)
        except BaseException:
            node.session.end()  # the broker's side of it is unknown now
            node.records_came = False
            raise
        node.records_came = any(p[-1] for _, partitions in response.topics for p in partitions)
        if isinstance(request, SessionFetchRequest) and node.session.answered(request, response):
            request.polled_at = int(1000 * time.time())
        return response


# aiokafka's own methods, once patched.
_ORIGINALS: dict[str, Any] = {}
_POLICY = "_engagement_fetch_policy"


@dataclass(frozen=True)
class FetchBounds:
    """How the worker's aiokafka consumer fetches: Faust creates it with a hard-coded
    ``fetch_max_wait_ms=1500`` and aiokafka's ``fetch_min_bytes=1``; these are set on it
    before it starts (aiokafka hands them to its fetcher on start), and ``policy`` when
    given (None: aiokafka's own full fetches)."""

    max_wait_ms: int
    min_bytes: int
    policy: FetchPolicy | None

    def apply(self, kafka_consumer: Any) -> None:
        kafka_consumer._fetch_max_wait_ms = self.max_wait_ms
        kafka_consumer._fetch_min_bytes = self.min_bytes
        policy, gather, how = self.policy, "no gathering", "every partition each"
        if policy is not None:
            use(kafka_consumer, policy)
            if policy.gather_ms:
                gather = f"{policy.gather_ms} ms while records keep coming"
            if policy.sessions:
                how = "in incremental sessions"
        log.info(
            "fetches wait at most %d ms for %d bytes (%s), %s",
            self.max_wait_ms, self.min_bytes, gather, how,
        )  # fmt: skip


def use(consumer: Any, policy: FetchPolicy) -> None:
    """Have ``consumer`` (an AIOKafkaConsumer, before it starts) fetch by ``policy``.
    Other consumers fetch as aiokafka does."""
    install()
    setattr(consumer._client, _POLICY, policy)


def install() -> None:
    """Patch aiokafka's fetcher (once) for the consumers given a policy. The sources it
    wraps are checked before the worker starts (streams/kafka/seam.py)."""
    if _ORIGINALS:
        return
    actions = Fetcher._get_actions_per_node
    process = Fetcher._proc_fetch_request

    @functools.wraps(actions)  # the seam's digest check reads the wrapped source
    def _get_actions_per_node(self: Any, assignment: Any) -> Any:
        client = self._client
        if not isinstance(client, PolicyClient):
            policy = getattr(client, _POLICY, None)
            if policy is None:
                return actions(self, assignment)
            client = self._client = PolicyClient(client, policy)
        requests, *rest = actions(self, assignment)
        nodes, policy = client.nodes, client.policy
        requests = [
            (node_id, nodes.setdefault(node_id, NodeFetching()).request(policy, request))
            for node_id, request in requests
        ]
        return (requests, *rest)

    @functools.wraps(process)
    async def _proc_fetch_request(self: Any, assignment: Any, node_id: int, request: Any) -> Any:
        result = await process(self, assignment, node_id, request)
        if not isinstance(request, SessionFetchRequest) or not assignment.active:
            return result
        polled_at, end_unknown = request.polled_at, False
        for tp in request.offsets:
            state = assignment.state_value(tp)
            if state is None:
                continue
            if polled_at is not None:
                # The partitions the reply left out were polled too, with nothing new:
                # Faust reads this time to tell a stalled fetcher from a quiet partition.
                state.timestamp = polled_at
            end_unknown = end_unknown or state.highwater is None
        if end_unknown and polled_at is not None:
            # A partition in the session whose end offset aiokafka does not know: its
            # answer was discarded (a seek while the fetch was out), or it was assigned
            # anew while the session kept it. The broker names it again only when it has
            # new records, and the end offset is what tells the event clock the partition
            # is read (streams/pipeline/ordering.py): a new session, whose first reply names all.
            self._client.nodes[node_id].session.end()
        return result

    _ORIGINALS.update(_get_actions_per_node=actions, _proc_fetch_request=process)
    Fetcher._get_actions_per_node = _get_actions_per_node
    Fetcher._proc_fetch_request = _proc_fetch_request
