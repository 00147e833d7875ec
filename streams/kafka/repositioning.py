"""Where each input partition resumes, and when the group may commit: by what Redis holds.

Kafka's committed offsets are Faust's; the scorer's truth is what Redis has applied
(streams/state/positions.py). On every assignment each partition resumes at the position
``start_offset`` derives from both, and no commit goes out before Redis is checked to
still hold what this worker committed there.

Faust's ``on_partitions_assigned`` signal runs *before* its recovery seeks every partition
to the committed offset, so a seek made in the signal would be undone; the consumer's
``perform_seek`` is the one place all those seeks go through (streams/kafka/transport.py
calls :meth:`Repositioning.resume` right after it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from redis.exceptions import RedisError

from streams.state.positions import Positions, meta_shard, start_offset

log = logging.getLogger(__name__)
T = TypeVar("T")

Retrying = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
StopIfLost = Callable[[Awaitable[Any]], Awaitable[Any]]


class Repositioning:
    """Resuming from Redis and guarding commits, for one worker's consumer."""

    def __init__(
        self,
        positions: Positions,
        topics: Collection[str],
        retrying: Retrying,
        stop_if_lost: StopIfLost,
    ) -> None:
        self.positions = positions
        self.topics = set(topics)
        self.retrying = retrying
        self.stop_if_lost = stop_if_lost

    async def resume(self, consumer: Any) -> None:
        """After Faust sought every assigned partition to its committed offset: seek each
        input partition to where Redis says it resumes instead."""
        assigned = [tp for tp in consumer.assignment() if tp.topic in self.topics]
        if not assigned:
            return
        positions = self.positions
        stored = await self.retrying(
            lambda: positions.applied_and_done([(tp.topic, tp.partition) for tp in assigned])
        )
        for tp in assigned:
            committed = consumer.committed_offset(tp)
            applied, done = stored[(tp.topic, tp.partition)]
            if applied is not None:
                # Resuming here relies on Redis keeping what it holds now: should it later
                # hold less (an AOF rollback under this worker), the records in between
                # would never be read again, so that counts as a loss too, even if this
                # worker committed none of them itself.
                positions.rely_on_applied(tp.topic, tp.partition, applied)
            offset = start_offset(committed, applied, done)
            if offset is None or offset == committed:
                continue
            log.info(
                "resuming %s:%d at %d (Kafka committed %s, Redis applied %s, done %s)",
                tp.topic, tp.partition, offset, committed, applied, done,
            )  # fmt: skip
            await consumer.seek(tp, offset)
            # Faust compares new commits with this; from here on it is the truth, so the
            # group's committed offset follows what Redis has (it may move back).
            consumer.set_committed_offset(tp, offset)

    async def may_commit(self, tps: Collection[Any]) -> bool:
        """Whether the group may commit ``tps`` now: Redis still holds what this worker
        committed to their shards. Faust commits on a timer of its own: after Redis lost
        writes (AOF everysec) it would still commit records this worker applied before the
        loss, until the worker's next read of their shard noticed; checked here first, that
        window shrinks to the check's round trip."""
        positions = self.positions
        shards = {
            meta_shard(tp.partition, positions.shards) for tp in tps if tp.topic in self.topics
        }
        try:
            await asyncio.wait_for(self.stop_if_lost(positions.store.verify(shards)), 5.0)
        except (TimeoutError, RedisError, OSError):
            return False  # Redis unreachable: commit later (Redis is where work resumes)
        return True
