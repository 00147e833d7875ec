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
from collections.abc import Iterator
from itertools import islice

from scoring.codec import decode, encode_evaluated, with_exact_check
from scoring.config import ScoringConfig
from scoring.engine import Alert, sweep_due, with_exact_check_at
from scoring.schedule import settle_stored
from streams.kpis import KpiDelta
from streams.store import ShardView, ShardWrite

# A sweep commits each shard's page in parts of at most this many customers, each part
# once the one before it has applied (``Scorer._sweep``): Redis applies a part while the
# worker scores the next, and at the end of a sweep the worker waits for the last part's
# commit alone, not a whole page's (1,000 swept faster than 2,000, 500 or 250).
COMMIT_CUSTOMERS = 1_000


def commit_parts(
    blobs: dict[str, bytes], size: int = COMMIT_CUSTOMERS
) -> Iterator[dict[str, bytes]]:
    """``blobs`` in parts of at most ``size`` customers, in order."""
    if len(blobs) <= size:
        yield blobs
        return
    items = iter(blobs.items())
    while part := dict(islice(items, size)):
        yield part


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
