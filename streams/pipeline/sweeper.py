"""One shard's due customers evaluated by the sweeper (``Scorer._sweep``).

Most due customers are only settled: their stored check time was a cheap lower bound
(``thresholds.earliest_check_at``), the exact one turns out later, and nothing else about
them changes. Those are settled from the few fields settling reads of the stored blob,
the blob patched in place and written back as ``ShardWrite.settled``, all in one compiled
loop (``scoring.schedule.settle_stored``): the state is never decoded, which cost more
than settling it. Every other customer is decoded and run through ``engine.sweep_due``,
as all were before, and an evaluated state is encoded from its stored blob, whose
decayed sums and counts an evaluation leaves as they are (``codec.encode_evaluated``).
Both give the same bytes, check times and alerts
(tests/unit/streams/test_sweeper.py compares them with the plain sweep).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice

from scoring.codec import decode, encode_evaluated, with_exact_check
from scoring.config import ScoringConfig
from scoring.engine import Alert, sweep_due, with_exact_check_at
from scoring.schedule import settle_stored
from streams.state.kpis import KpiDelta
from streams.state.store import ShardView, ShardWrite, StateStore

# A sweep commits each shard's page in parts of at most this many customers, each part
# once the one before it has applied (``Scorer._sweep``): Redis applies a part while the
# worker scores the next, and at the end of a sweep the worker waits for the last part's
# commit alone, not a whole page's (1,000 swept faster than 2,000, 500 or 250).
COMMIT_CUSTOMERS = 1_000
# The last page of a sweep ends in a part of at most this many customers: the worker has
# nothing to score while Redis applies it (BENCHMARKS.md, Sweep).
LAST_PART_CUSTOMERS = 250


def commit_parts(
    blobs: dict[str, bytes], size: int = COMMIT_CUSTOMERS, last: int | None = None
) -> Iterator[dict[str, bytes]]:
    """``blobs`` in parts of ``size`` customers, in order, the last one the rest; that
    one split in two when it has more than ``last`` (``size`` when None), the second of
    ``last`` customers."""
    last = size if last is None else min(size, last)
    if len(blobs) <= last:
        yield blobs
        return
    sizes = [size] * (len(blobs) // size) + ([len(blobs) % size] if len(blobs) % size else [])
    if sizes[-1] > last:
        sizes[-1:] = [sizes[-1] - last, last]
    items = iter(blobs.items())
    for n in sizes:
        yield dict(islice(items, n))


@dataclass(frozen=True, slots=True)
class DuePage:
    """A shard's page of due customers, as stored."""

    view: ShardView
    blobs: dict[str, bytes]
    listed: int  # customers listed due: those without a state (deleted) have no blob


class DuePages:
    """``async for page in DuePages(...)``: each shard's page of due customers (at most
    ``limit``, due by the shard's time in ``now_by_shard``), in that order, skipping
    shards with none, each read while the worker scores the page before it. Read up
    front, the pages were two round trips the worker waited for at the start of every
    sweep, with Redis idle while the worker scored (BENCHMARKS.md, Sweep). Reading a
    shard while another's commits are in flight is safe: each commit checks only its
    own shard's epoch. ``aclose`` stops a read still under way; ``exhausted``: no shard
    is left to read after the page last given (a later shard with none due still counts,
    so that page's last part is not made smaller then: knowing would cost the overlap)."""

    def __init__(self, store: StateStore, now_by_shard: Mapping[int, float], limit: int) -> None:
        self._store, self._now_by_shard, self._limit = store, now_by_shard, limit
        self._shards = iter(list(now_by_shard))
        self._ahead = self._read_next()

    def _read_next(self) -> asyncio.Future[DuePage | None] | None:
        shard = next(self._shards, None)
        return None if shard is None else asyncio.ensure_future(self._read(shard))

    async def _read(self, shard: int) -> DuePage | None:
        due = await self._store.due_customers([shard], self._now_by_shard, self._limit)
        if not due:
            return None
        view, blobs = (await self._store.read_stored(due, pipelined=True))[shard]
        return DuePage(view, blobs, len(due[shard]))

    @property
    def exhausted(self) -> bool:
        return self._ahead is None

    def __aiter__(self) -> DuePages:
        return self

    async def __anext__(self) -> DuePage:
        while self._ahead is not None:
            page = await self._ahead
            self._ahead = self._read_next()
            if page is not None:
                return page
        raise StopAsyncIteration

    async def aclose(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)


async def until_sent() -> None:
    """Two turns of the event loop, after which a commit started with ``ensure_future``
    has written its request: redis-py writes under ``asyncio.wait_for`` when a socket
    timeout is set (ours is), which on Python 3.11 writes from a task of its own, a turn
    later. After one turn the request waited in the worker while the next part was
    scored (BENCHMARKS.md, Sweep)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def sweep_shard(
    view: ShardView, blobs: dict[str, bytes], now: float, wall_now: float, config: ScoringConfig
) -> tuple[ShardWrite, list[Alert]]:
    """One shard's due customers evaluated at ``now`` (as stored: ``blobs``): the write
    (without its outbox triples) and the alerts."""
    write = ShardWrite(shard=view.shard, expected_epoch=view.epoch)
    states, encoded = write.states, write.encoded
    alerts: list[Alert] = []
    kpi = KpiDelta()
    settled, rest = settle_stored(blobs, now, config)
    write.settled = settled
    for customer_id, exact in rest.items():
        raw = blobs[customer_id]
        state = decode(raw)
        start = state
        if exact == exact:
            # settled, and due: what sweep_due's first step does, done already
            start = with_exact_check_at(state, exact)
        result, checked = sweep_due(start, now, wall_now, config)
        after = states[customer_id] = result.state
        if checked:
            kpi.add_evaluation(state, after, now)
            alerts.extend(result.alerts)
            encoded[customer_id] = encode_evaluated(raw, state, after)
        elif after is state:
            # Not due after all: written back as it is (an old JSON state is encoded
            # in the compact form, as every commit does).
            if raw[:1] != b"{":
                encoded[customer_id] = raw
        else:
            # Settled: only the check time moved, which no KPI counts and which the
            # stored blob takes in place (or None: an old JSON state, encoded anew).
            patched = with_exact_check(raw, after.next_check_at)
            if patched is not None:
                encoded[customer_id] = patched
    if blobs:
        # As add_evaluation does for every customer: the commit prunes day fields
        # older than the retention before today (``now``).
        kpi.note_time(now)
    kpi.apply_to(write)
    return write, alerts
