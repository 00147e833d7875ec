"""The Redis state layer: per-shard keys, one read and one atomic write per batch.

Key layout (``{ns}`` is the namespace, ``s`` the shard, i.e. the owner partition):

    {ns}:{s<s>}:meta         hash: epoch, o:<topic>:<p> applied offset,
                             w:<topic>:<p> latest event time seen (event clock)
    {ns}:{s<s>}:due          zset: customer_id -> next inactivity check (epoch seconds)
    {ns}:{s<s>}:outbox       stream: alerts written with the state, deleted once published
    {ns}:{s<s>}:kpi          hash: population KPI counters, all-time and per day
                             (see streams/state/kpis.py), changed by the same commit
    {ns}:{s<s>}:c:<customer> string: the customer's state (scoring/codec.py)

The ``{s<s>}`` hash tag puts a shard's keys in one Redis Cluster slot, so each part of the
commit script, which touches only one shard, runs on a cluster too, one call per shard.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from scoring.codec import decode as decode_state
from scoring.codec import encode as encode_state
from scoring.state import CustomerState

# One call of commit_shard.lua, or one shard's part of it: (keys, arguments).
Call = tuple[list[str], list[bytes | str]]

_COMMIT_LUA = resources.files("streams.state").joinpath("commit_shard.lua").read_text("utf-8")
_READ_LUA = resources.files("streams.state").joinpath("read_shards.lua").read_text("utf-8")


def offset_field(topic: str, partition: int) -> str:
    return f"o:{topic}:{partition}"


def mark_field(topic: str, partition: int) -> str:
    return f"w:{topic}:{partition}"


def parse_field(name: str) -> tuple[str, int]:
    """(topic, partition) of an ``o:`` or ``w:`` field; topics may contain colons."""
    topic, _, partition = name[2:].rpartition(":")
    return topic, int(partition)


@dataclass(frozen=True, slots=True)
class ShardKeys:
    namespace: str
    shard: int

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:{{s{self.shard}}}"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def due(self) -> str:
        return f"{self.prefix}:due"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}:outbox"

    @property
    def kpi(self) -> str:
        return f"{self.prefix}:kpi"

    def customer(self, customer_id: str) -> str:
        return f"{self.prefix}:c:{customer_id}"

    def customers(self, customer_ids: Iterable[str]) -> list[str]:
        """``customer`` of each id: the prefix made once (a sweep names 2,000 a shard)."""
        prefix = f"{self.prefix}:c:"
        return [prefix + c for c in customer_ids]


@dataclass(frozen=True, slots=True)
class ShardView:
    """What a batch needs from one shard, read in the same round trip as its customers."""

    shard: int
    epoch: str
    offsets: Mapping[str, int]
    marks: Mapping[str, float]
    customers: Mapping[str, CustomerState]

    def applied_offset(self, topic: str, partition: int) -> int:
        return self.offsets.get(offset_field(topic, partition), -1)


@dataclass(slots=True)
class ShardWrite:
    """Everything one shard's batch changes, applied by one script call or not at all."""

    shard: int
    expected_epoch: str
    states: dict[str, CustomerState] = field(default_factory=dict)
    # Blobs of some of ``states`` already in their stored form (scoring/codec.py), sent
    # as they are: the sweeper patches a stored blob whose check time alone moved.
    encoded: dict[str, bytes] = field(default_factory=dict)
    # Customers not in ``states`` written back as stored but for the check time, which
    # the sweeper settled from a few stored fields: (patched blob, check time).
    settled: dict[str, tuple[bytes, float | None]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    # (topic, key, value) triples to append to the outbox with the state.
    outbox: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    acked_outbox_ids: list[str] = field(default_factory=list)
    # KPI hash field -> what the batch adds (streams/state/kpis.py), applied with the state.
    kpi: dict[str, float] = field(default_factory=dict)
    # Day fields of the KPI hash older than this day are deleted and no longer written.
    kpi_cutoff_day: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    shard: int
    entry_id: str
    topic: str
    key: bytes
    value: bytes


class Conflict(Exception):
    """The shard changed between read and write; re-read and recompute."""


_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class StateStore:
    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        namespace: str,
        *,
        per_shard_calls: bool = False,
    ) -> None:
        self.client = client
        self.namespace = namespace
        # A cluster pipeline refuses MGET even within one slot; per-key GETs in the same
        # pipeline cost more commands but no more round trips.
        self._cluster = isinstance(client, RedisCluster)
        # On a standalone Redis a batch's shards are read by one script call and committed
        # by one: each command and reply of a pipeline costs the worker tens of us (redis-py
        # parses each under its own timeout), about a sixth of a batch's CPU at a few events
        # per shard (BENCHMARKS.md). On a cluster (or through a proxy that routes by key) a
        # call must stay within one hash slot: calls per shard there.
        self.per_shard_calls = per_shard_calls or self._cluster
        self._commit_sha = hashlib.sha1(_COMMIT_LUA.encode()).hexdigest()
        self._read_sha = hashlib.sha1(_READ_LUA.encode()).hexdigest()

    def keys(self, shard: int) -> ShardKeys:
        return ShardKeys(self.namespace, shard)

    async def read(self, wanted: Mapping[int, Sequence[str]]) -> dict[int, ShardView]:
        """Meta and customer states of every shard in ``wanted``: one round trip."""
        return {
            shard: replace(view, customers={c: decode_state(b) for c, b in blobs.items()})
            for shard, (view, blobs) in (await self.read_stored(wanted)).items()
        }

    async def read_stored(
        self, wanted: Mapping[int, Sequence[str]], *, pipelined: bool = False
    ) -> dict[int, tuple[ShardView, dict[str, bytes]]]:
        """Meta of every shard in ``wanted`` (views without customers) and its customers'
        states as stored (scoring/codec.py), not decoded: one round trip. ``pipelined``:
        HGETALL and MGET per shard even on a standalone Redis, not the read script, whose
        copying of the blobs through Lua costs Redis more than the replies cost the worker
        when the shards are few and large (the sweep's pages)."""
        if not (self.per_shard_calls or pipelined):
            return await self._read_by_script(wanted)
        pipe = self.client.pipeline(transaction=False)
        order: list[tuple[int, list[str]]] = []
        for shard, customer_ids in wanted.items():
            keys = self.keys(shard)
            ids = list(customer_ids)
            pipe.hgetall(keys.meta)
            if ids and self._cluster:
                for c in ids:
                    pipe.get(keys.customer(c))
            elif ids:
                pipe.mget(keys.customers(ids))
            order.append((shard, ids))
        replies: list[Any] = await pipe.execute()
        out: dict[int, tuple[ShardView, dict[str, bytes]]] = {}
        it = iter(replies)
        for shard, ids in order:
            meta: dict[bytes, bytes] = next(it)
            blobs: list[bytes | None] = (
                [next(it) for _ in ids] if self._cluster else (next(it) if ids else [])
            )
            stored = {c: b for c, b in zip(ids, blobs, strict=True) if b is not None}
            out[shard] = (_view(shard, meta), stored)
        return out

    async def _read_by_script(
        self, wanted: Mapping[int, Sequence[str]]
    ) -> dict[int, tuple[ShardView, dict[str, bytes]]]:
        shards = list(wanted)
        if not shards:
            return {}
        ids = [(s, c) for s, customer_ids in wanted.items() for c in customer_ids]
        keys = [self.keys(s).meta for s in shards]
        for s, customer_ids in wanted.items():
            keys += self.keys(s).customers(customer_ids)
        try:
            reply = await self.client.evalsha(self._read_sha, len(keys), *keys, len(shards))
        except redis.exceptions.NoScriptError:
            await self.client.script_load(_READ_LUA)
            reply = await self.client.evalsha(self._read_sha, len(keys), *keys, len(shards))
        out: dict[int, tuple[ShardView, dict[str, bytes]]] = {}
        for shard, flat in zip(shards, reply[:-1], strict=True):
            meta = dict(zip(flat[::2], flat[1::2], strict=True))
            out[shard] = (_view(shard, meta), {})
        for (shard, c), blob in zip(ids, reply[-1], strict=True):
            if blob is not None:
                out[shard][1][c] = blob
        return out

    async def commit(self, writes: Sequence[ShardWrite]) -> dict[int, list[str] | None]:
        """Apply each shard's write atomically, all in one round trip.

        Returns, per shard, the outbox ids of the alerts it appended, or ``None`` when the
        shard changed since it was read, or its node did not answer (re-read and re-do).
        """
        parts = [_commit_call(self.keys(w.shard), w) for w in writes]
        replies = await self._run_parts(parts)
        missing = [
            i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)
        ]
        if missing:
            # A restarted Redis (or a new cluster node) has no scripts: load it and send
            # again only the parts it refused; the others ran.
            await self.client.script_load(_COMMIT_LUA)
            again = await self._run_parts([parts[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        result: dict[int, list[str] | None] = {}
        for w, reply in zip(writes, replies, strict=True):
            if isinstance(reply, _LOST):
                # The call may or may not have run: re-reading the shard tells which.
                result[w.shard] = None
                continue
            if isinstance(reply, BaseException):
                raise reply
            ok = int(reply[0]) == 1
            result[w.shard] = [_text(x) for x in reply[2:]] if ok else None
        return result

    async def _run_parts(self, parts: Sequence[Call]) -> list[Any]:
        """Each part's reply, or the error its call raised (not raised here)."""
        if not parts:
            return []
        calls = [[p] for p in parts] if self.per_shard_calls else [list(parts)]
        replies = await self._evalsha_all([_script_call(c) for c in calls])
        return [
            part_reply
            for call, reply in zip(calls, replies, strict=True)
            # an error stands for every part of its call
            for part_reply in ([reply] * len(call) if isinstance(reply, BaseException) else reply)
        ]

    async def _evalsha_all(self, calls: Sequence[Call]) -> list[Any]:
        """Each call's reply, or the error it raised (not raised here)."""
        # EVALSHA directly rather than redis-py's Script objects, which send a SCRIPT
        # EXISTS round trip before every pipeline. A cluster pipeline refuses EVALSHA: there
        # the calls go out concurrently, each to its shard's node, still one round trip.
        if self._cluster:
            return list(
                await asyncio.gather(
                    *(self.client.evalsha(self._commit_sha, len(k), *k, *a) for k, a in calls),
                    return_exceptions=True,
                )
            )
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(self._commit_sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def delete_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        by_shard: dict[int, list[str]] = {}
        for e in entries:
            by_shard.setdefault(e.shard, []).append(e.entry_id)
        if not by_shard:
            return
        pipe = self.client.pipeline(transaction=False)
        for shard, ids in by_shard.items():
            pipe.xdel(self.keys(shard).outbox, *ids)
        await pipe.execute()

    async def pending_outbox(self, shards: Sequence[int], limit: int) -> list[OutboxEntry]:
        pipe = self.client.pipeline(transaction=False)
        for shard in shards:
            pipe.xrange(self.keys(shard).outbox, count=limit)
        replies: list[list[tuple[bytes, dict[bytes, bytes]]]] = await pipe.execute()
        return [
            OutboxEntry(shard, _text(eid), _text(f[b"t"]), f[b"k"], f[b"v"])
            for shard, entries in zip(shards, replies, strict=True)
            for eid, f in entries
        ]

    async def due_customers(
        self, shards: Sequence[int], now_by_shard: Mapping[int, float], limit: int
    ) -> dict[int, list[str]]:
        pipe = self.client.pipeline(transaction=False)
        for shard in shards:
            pipe.zrangebyscore(
                self.keys(shard).due, "-inf", now_by_shard[shard], start=0, num=limit
            )
        replies: list[list[bytes]] = await pipe.execute()
        return {s: [_text(m) for m in r] for s, r in zip(shards, replies, strict=True) if r}

    async def metas(self, shards: Sequence[int]) -> dict[int, ShardView]:
        """Epoch, offsets and watermarks of each shard, without customers."""
        return await self.read(dict.fromkeys(shards, ()))

    async def customer(self, shard: int, customer_id: str) -> CustomerState | None:
        raw = await self.client.get(self.keys(shard).customer(customer_id))
        if raw is None:
            return None
        return decode_state(raw.encode("latin-1") if isinstance(raw, str) else raw)


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _view(shard: int, meta: dict[bytes, bytes]) -> ShardView:
    return ShardView(
        shard=shard,
        epoch=_text(meta.get(b"epoch", b"0")),
        offsets={_text(k): int(v) for k, v in meta.items() if k.startswith(b"o:")},
        marks={_text(k): float(v) for k, v in meta.items() if k.startswith(b"w:")},
        customers={},
    )


def _script_call(parts: Sequence[Call]) -> Call:
    """One call of commit_shard.lua applying the given shards' parts."""
    keys: list[str] = []
    args: list[bytes | str] = [str(len(parts))]
    for part_keys, part_args in parts:
        keys.extend(part_keys)
        args.extend((str(len(part_keys)), str(len(part_args))))
        args.extend(part_args)
    return keys, args


def _commit_call(keys: ShardKeys, w: ShardWrite) -> Call:
    customer_ids = [*w.states, *w.settled]
    args: list[bytes | str] = [w.expected_epoch, str(len(w.marks))]
    for name, mark in w.marks.items():
        args.extend((name, repr(mark)))
    args.append(str(len(customer_ids)))
    encoded, states, settled = w.encoded, w.states, w.settled
    args.extend(encoded.get(c) or encode_state(s) for c, s in states.items())
    args.extend(blob for blob, _ in settled.values())
    args.append(str(len(customer_ids)))
    for c, s in states.items():
        nxt = s.next_check_at
        args.extend((c, repr(nxt) if nxt is not None else ""))
    for c, (_, nxt) in settled.items():
        args.extend((c, repr(nxt) if nxt is not None else ""))
    args.append(str(len(w.offsets)))
    for name, offset in w.offsets.items():
        args.extend((name, str(offset)))
    args.append(str(len(w.outbox)))
    for topic, key, value in w.outbox:
        args.extend((topic, key, value))
    args.append(str(len(w.acked_outbox_ids)))
    args.extend(w.acked_outbox_ids)
    args.append("" if w.kpi_cutoff_day is None else str(w.kpi_cutoff_day))
    args.append(str(len(w.kpi)))
    for name, delta in w.kpi.items():
        args.extend((name, repr(delta)))
    return [keys.meta, keys.due, keys.outbox, keys.kpi, *keys.customers(customer_ids)], args
