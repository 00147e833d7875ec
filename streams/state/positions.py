"""Where each input partition resumes: at what Redis has applied, not at what Kafka says.

Kafka's committed offset is written after Redis, so it can only run ahead of Redis when
Redis lost writes (no persistence, or AOF ``everysec`` losing its last second). Then the
lost events must be read again. On every assignment each partition is positioned at the
latest offset both of these make safe:

- ``min(committed, applied + 1)``: ``applied`` (``o:`` in the shard meta) is the highest
  scored offset Redis holds; Kafka's committed offset bounds it because dead letters and
  reroutes below a scored record may not have been delivered when Redis applied it;
- ``done + 1``: ``done`` (``d:``) is written after a batch with dead letters or reroutes is
  delivered, and only up to the partition's first record still in flight, so everything at
  or below it was applied or delivered. Redis persists writes in order, so a ``done`` that
  survived a loss implies the scored records below it survived too.

Redis losing writes while a worker runs is caught by :class:`GuardedStore`: a shard whose
applied offsets are below what this very worker committed means the state went back in time,
and the worker stops (:data:`EXIT_STATE_LOST`) so that its restart re-reads from Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from streams.state.store import ShardKeys, ShardView, ShardWrite, StateStore, offset_field

log = logging.getLogger(__name__)

# EX_TEMPFAIL: the supervisor should start the worker again; it resumes from Redis.
EXIT_STATE_LOST = 75

# ARGV: n_checks, (o: field, lowest offset expected) x n_checks, then (d: field, offset)...
# The checks make a worker that has not noticed a Redis loss yet unable to record a done
# offset over records the loss took away.
_MAX_FIELDS_LUA = """
local n = tonumber(ARGV[1])
local i = 2
for _ = 1, n do
  local held = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if held < tonumber(ARGV[i + 1]) then
    return {0, ARGV[i], tostring(held), ARGV[i + 1]}
  end
  i = i + 2
end
while i <= #ARGV do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if not current or tonumber(ARGV[i + 1]) > tonumber(current) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
return {1}
"""

TP = tuple[str, int]


class StateLost(RuntimeError):
    """Redis holds less than this worker committed to it: writes were lost."""


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def done_field(topic: str, partition: int) -> str:
    return f"d:{topic}:{partition}"


def meta_shard(partition: int, shards: int) -> int:
    """The shard whose meta hash keeps a partition's offsets (its own number on input
    topics with ``shards`` partitions; folded for topics with more)."""
    return partition % shards


def start_offset(committed: int | None, applied: int | None, done: int | None) -> int | None:
    """The offset to resume a partition at, or ``None`` to leave Kafka's choice (the
    committed offset, or the earliest record when there is none)."""
    candidates = []
    if committed is not None:
        candidates.append(committed if applied is None else min(committed, applied + 1))
    if done is not None:
        candidates.append(done + 1)
    return max(candidates) if candidates else None


def done_frontier(delivered: Mapping[TP, int], first_pending: Mapping[TP, int]) -> dict[TP, int]:
    """Per partition with records ``delivered`` up to an offset: the highest offset at or
    below which every record this worker read is finished, i.e. the delivered offset, or
    just below the partition's first record still in flight (``first_pending``) if that
    comes before it."""
    return {
        tp: min(top, first_pending[tp] - 1) if tp in first_pending else top
        for tp, top in delivered.items()
    }


class Positions:
    """Reads and writes the offsets a partition can safely resume from."""

    def __init__(self, store: GuardedStore, shards: int) -> None:
        self.store = store
        self.shards = shards
        self._max_fields = store.client.register_script(_MAX_FIELDS_LUA)

    def _meta(self, partition: int) -> str:
        return ShardKeys(self.store.namespace, meta_shard(partition, self.shards)).meta

    async def record_done(self, frontier: Mapping[TP, int]) -> None:
        """Raise each partition's ``d:`` field to ``frontier`` (never lower it), provided
        Redis still holds the applied offsets this worker committed or resumed after
        there (as of now, before the write is sent); else raise :class:`StateLost`."""
        committed_here = self.store.committed_here
        calls: dict[str, tuple[list[str], list[str]]] = {}
        for (topic, partition), offset in frontier.items():
            if offset < 0:
                continue
            checks, fields = calls.setdefault(self._meta(partition), ([], []))
            applied = offset_field(topic, partition)
            expected = committed_here.get(meta_shard(partition, self.shards), {}).get(applied)
            if expected is not None:
                checks.extend((applied, str(expected)))
            fields.extend((done_field(topic, partition), str(offset)))
        replies = await asyncio.gather(
            *(
                self._max_fields(keys=[meta], args=[str(len(checks) // 2), *checks, *fields])
                for meta, (checks, fields) in calls.items()
            )
        )
        for meta, reply in zip(calls, replies, strict=True):
            if int(reply[0]) == 0:
                name, held, mine = (_text(x) for x in reply[1:4])
                raise StateLost(
                    f"{meta}: Redis holds {name} = {held}, but this worker committed "
                    f"{mine} there: Redis lost writes"
                )

    def rely_on_applied(self, topic: str, partition: int, applied: int) -> None:
        """From now on, Redis holding less than ``applied`` for the partition means it lost
        writes this worker relies on (see :class:`GuardedStore`)."""
        shard = meta_shard(partition, self.shards)
        self.store.expect(shard, offset_field(topic, partition), applied)

    async def applied_and_done(
        self, partitions: Collection[TP]
    ) -> dict[TP, tuple[int | None, int | None]]:
        """(``o:``, ``d:``) of each partition, ``None`` where Redis has none."""
        metas = sorted({self._meta(p) for _, p in partitions})
        pipe = self.store.client.pipeline(transaction=False)
        for meta in metas:
            pipe.hgetall(meta)
        replies: list[dict[bytes, bytes]] = await pipe.execute()
        hashes = dict(zip(metas, replies, strict=True))
        result: dict[TP, tuple[int | None, int | None]] = {}
        for topic, partition in partitions:
            fields = hashes[self._meta(partition)]
            applied = fields.get(offset_field(topic, partition).encode())
            done = fields.get(done_field(topic, partition).encode())
            result[(topic, partition)] = (
                int(applied) if applied is not None else None,
                int(done) if done is not None else None,
            )
        return result


class GuardedStore(StateStore):
    """A state store that notices Redis going back in time under this worker."""

    def __init__(self, client: Any, namespace: str, *, per_shard_calls: bool = False) -> None:
        super().__init__(client, namespace, per_shard_calls=per_shard_calls)
        # shard -> applied offset field -> the lowest offset Redis must hold there: the
        # highest this worker committed, or resumed after on assignment
        self.committed_here: dict[int, dict[str, int]] = {}

    async def read_stored(
        self, wanted: Mapping[int, Sequence[str]], *, pipelined: bool = False
    ) -> dict[int, tuple[ShardView, dict[str, bytes]]]:
        # Every read goes through here (``read`` decodes what this returns). What was
        # committed before the read is sent: a commit finishing while the read is in
        # flight may or may not be in its reply.
        before = {s: dict(self.committed_here.get(s, {})) for s in wanted}
        stored = await super().read_stored(wanted, pipelined=pipelined)
        for view, _ in stored.values():
            self.check(view, before.get(view.shard, {}))
        return stored

    async def commit(self, writes: Sequence[ShardWrite]) -> dict[int, list[str] | None]:
        result = await super().commit(writes)
        for write in writes:
            if result.get(write.shard) is not None:
                for name, offset in write.offsets.items():
                    self.expect(write.shard, name, offset)
        return result

    def expect(self, shard: int, name: str, offset: int) -> None:
        """From now on, Redis must hold at least ``offset`` in the shard's applied offset
        field ``name``: this worker committed it, or resumed after it."""
        mine = self.committed_here.setdefault(shard, {})
        mine[name] = max(mine.get(name, -1), offset)

    async def verify(self, shards: Collection[int]) -> None:
        """Raise :class:`StateLost` if Redis now holds less, in any of ``shards``, than
        this worker committed or resumed after there."""
        expected = {s: dict(self.committed_here[s]) for s in shards if self.committed_here.get(s)}
        if not expected:
            return
        pipe = self.client.pipeline(transaction=False)
        for shard, fields in expected.items():
            pipe.hmget(ShardKeys(self.namespace, shard).meta, list(fields))
        replies = await pipe.execute()
        for (shard, fields), held in zip(expected.items(), replies, strict=True):
            offsets = {name: int(v) for name, v in zip(fields, held, strict=True) if v is not None}
            self.check_offsets(shard, offsets, fields)

    def check(self, view: ShardView, committed: Mapping[str, int]) -> None:
        """Raise :class:`StateLost` if ``view`` holds less than ``committed`` (what this
        worker had committed to the shard when it sent the read)."""
        self.check_offsets(view.shard, view.offsets, committed)

    @staticmethod
    def check_offsets(shard: int, held: Mapping[str, int], committed: Mapping[str, int]) -> None:
        for name, offset in committed.items():
            if held.get(name, -1) < offset:
                raise StateLost(
                    f"shard {shard}: Redis holds {name} = {held.get(name, -1)}, but this "
                    f"worker committed {offset} there: Redis lost writes"
                )
