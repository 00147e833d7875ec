"""Customer states as a test reads and compares them: every state of a namespace from
Redis, and which fields of two states differ (floats within 1e-9 relative, the rest
exactly). Shared by the integration tests and the chaos suite."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import redis.asyncio as aioredis

from scoring import codec
from scoring.config import ScoringConfig
from scoring.engine import settle
from scoring.state import CustomerState

REL_TOL = 1e-9


async def read_states(client: aioredis.Redis, namespace: str) -> dict[str, CustomerState]:
    """Every customer state stored under ``namespace``, by customer id."""
    found: dict[str, CustomerState] = {}
    keys = [k async for k in client.scan_iter(match=f"{namespace}:*:c:*", count=2000)]
    for i in range(0, len(keys), 500):
        for raw in await client.mget(keys[i : i + 500]):
            if raw is not None:
                state = codec.decode(raw)
                found[state.customer_id] = state
    return found


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def differing_fields(got: CustomerState, want: CustomerState, config: ScoringConfig) -> list[str]:
    """Fields of the two states that differ (floats within 1e-9 relative). Compared after
    ``settle``: one may hold a cheap lower bound of the next check where the other holds
    the exact time, which is the same schedule."""
    got, want = settle(got, config), settle(want, config)
    return [
        f.name
        for f in dataclasses.fields(want)
        if not _close(getattr(got, f.name), getattr(want, f.name))
    ]
