"""Per-customer rolling state and its exact, order-independent time decay.

A decayed sum is kept relative to a per-customer landmark time L: each contribution w at
time t adds ``w * 2**((t - L) / h)``, and the value at time ``now`` is
``S * 2**(-(now - L) / h)``. Addition commutes, so the same events in any order give the
same state (to the last bits of floating-point addition), and nothing is ever rescaled on
read. When an exponent grows past ``_REBASE_EXPONENT`` the landmark moves forward.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

DAY_S = 86_400.0
_REBASE_EXPONENT = 400.0


def day_floor(t: float) -> float:
    return math.floor(t / DAY_S) * DAY_S


def event_digest(event_id: str) -> str:
    """A short digest of an event id for the per-customer duplicate filter."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class CustomerState:
    customer_id: str
    landmark: float
    # Landmark-scaled decayed sums by feature name; half-lives come from the config.
    decayed: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    first_seen: float = 0.0
    last_seen: float = 0.0
    churn_risk: float = 0.0
    # Highest churn level alerted and not yet re-armed: 0 none, 1 elevated, 2 high.
    churn_level: int = 0
    # How many churn alerts this customer has had: part of their deterministic ids.
    churn_alerts: int = 0
    last_alert_at: dict[str, float] = field(default_factory=dict)
    next_check_at: float | None = None
    # False while next_check_at is only a cheap lower bound of the exact check time: the
    # schedule may come early, never late; reaching it computes the exact time (see
    # scoring.engine.settle), which for an active customer is rarely needed at all.
    check_exact: bool = True
    evaluated_at: float = 0.0
    # event digest -> when it was applied (scorer clock), for the duplicate window.
    recent_events: dict[str, float] = field(default_factory=dict)

    @classmethod
    def new(cls, customer_id: str, first_event_at: float) -> CustomerState:
        return cls(
            customer_id=customer_id,
            landmark=day_floor(first_event_at),
            first_seen=first_event_at,
            last_seen=first_event_at,
        )

    def value(self, name: str, half_life_s: float, at: float) -> float:
        """The decayed value of feature ``name`` at time ``at``."""
        scaled = self.decayed.get(name, 0.0)
        if scaled == 0.0:
            return 0.0
        return scaled * math.pow(2.0, -(at - self.landmark) / half_life_s)

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    def contributed(
        self, weights: Mapping[str, float], at: float, half_lives: Mapping[str, float]
    ) -> tuple[float, dict[str, float]]:
        """(landmark, decayed sums) once each weight is added at time ``at``;
        ``half_lives`` covers every feature."""
        landmark, decayed = self.landmark, dict(self.decayed)
        if any((at - landmark) / half_lives[name] > _REBASE_EXPONENT for name in weights):
            shift = day_floor(at) - landmark
            landmark += shift
            decayed = {n: v * math.pow(2.0, -shift / half_lives[n]) for n, v in decayed.items()}
        for name, weight in weights.items():
            if weight:
                decayed[name] = decayed.get(name, 0.0) + weight * math.pow(
                    2.0, (at - landmark) / half_lives[name]
                )
        return landmark, decayed

    def with_contributions(
        self, weights: Mapping[str, float], at: float, half_lives: Mapping[str, float]
    ) -> CustomerState:
        """Add each weight at time ``at`` to its feature; ``half_lives`` covers every feature."""
        landmark, decayed = self.contributed(weights, at, half_lives)
        return replace(self, landmark=landmark, decayed=decayed)

    def with_counts(self, **increments: int) -> CustomerState:
        counts = dict(self.counts)
        for name, inc in increments.items():
            counts[name] = counts.get(name, 0) + inc
        return replace(self, counts=counts)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "c": self.customer_id,
                "L": self.landmark,
                "d": self.decayed,
                "n": self.counts,
                "f": self.first_seen,
                "l": self.last_seen,
                "r": self.churn_risk,
                "v": self.churn_level,
                "a": self.churn_alerts,
                "t": self.last_alert_at,
                "x": self.next_check_at,
                "k": self.check_exact,
                "e": self.evaluated_at,
                "i": self.recent_events,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> CustomerState:
        d: dict[str, Any] = orjson.loads(raw)
        return cls(
            customer_id=d["c"],
            landmark=d["L"],
            decayed=d["d"],
            counts=d["n"],
            first_seen=d["f"],
            last_seen=d["l"],
            churn_risk=d["r"],
            churn_level=d["v"],
            churn_alerts=d["a"],
            last_alert_at=d["t"],
            next_check_at=d["x"],
            check_exact=d.get("k", True),
            evaluated_at=d["e"],
            recent_events=d["i"],
        )
