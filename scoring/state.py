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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

DAY_S = 86_400.0
_REBASE_EXPONENT = 400.0
# Linear counting over a 64-bit bitmap: n ~ -m ln(zeros / m); a full map reads as this.
_BITMAP_BITS = 64
_BITMAP_FULL = _BITMAP_BITS * math.log(_BITMAP_BITS)


def bit_of(key: str) -> int:
    """The bitmap bit of a product, game or category id (stable across processes)."""
    return 1 << (hashlib.blake2b(key.encode(), digest_size=1).digest()[0] & 63)


def distinct_estimate(bitmap: int) -> float:
    """Linear-counting estimate of how many distinct ids set the bits of ``bitmap``."""
    zeros = _BITMAP_BITS - bitmap.bit_count()
    if zeros == 0:
        return _BITMAP_FULL
    return -_BITMAP_BITS * math.log(zeros / _BITMAP_BITS)


def day_floor(t: float) -> float:
    return math.floor(t / DAY_S) * DAY_S


def event_digest(event_id: str) -> str:
    """A short digest of an event id for the per-customer duplicate filter."""
    # 48 bits: a collision among the few events of one customer's window is ~n^2 / 2^49.
    return hashlib.blake2b(event_id.encode(), digest_size=6).hexdigest()


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
    # event digest -> when it was applied (scorer clock, whole seconds), for the duplicate
    # window.
    recent_events: dict[str, float] = field(default_factory=dict)
    # Purchases, for BG/NBD (x = purchase_days - 1, t_x, T) and Gamma-Gamma: UTC day
    # numbers of the first and last purchase (-1: none yet), how many distinct days had
    # one, bit (day % 64) of each such day (to tell a late day between the first and the
    # last from one already counted), gross order amounts and those of the first day
    # (the rest is the repeat purchases' spend). Min, max and sums: any order of the same
    # orders gives the same values, the day count too unless two of its days 64k apart
    # arrive out of order.
    first_purchase_day: int = -1
    last_purchase_day: int = -1
    purchase_days: int = 0
    purchase_day_bits: int = 0
    spend: float = 0.0
    first_day_spend: float = 0.0
    # The session in progress: a 32-bit digest of its id (0: none), its start, its hits,
    # and whether it already counted as a conversion.
    session: int = 0
    session_start: float = 0.0
    session_hits: int = 0
    session_converted: bool = False
    last_nps: int = -1
    # UTC day of the last play event (gaming "playing days"), -1: none.
    last_play_day: int = -1
    # 64-bit linear-counting bitmaps: products bought, products or games viewed or played,
    # categories bought.
    products_bought: int = 0
    items_seen: int = 0
    categories: int = 0
    # RFM tier and CLV as of the last evaluation ("" until the first one).
    tier: str = ""
    clv: float = 0.0

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

    def evolve(self, **changes: Any) -> CustomerState:
        """A copy with ``changes``: ``dataclasses.replace`` without its per-call field
        walk (the engine copies a state twice per event; this is 3-4x faster)."""
        if not _FIELD_NAMES.issuperset(changes):
            unknown = ", ".join(sorted(set(changes) - _FIELD_NAMES))
            raise TypeError(f"CustomerState has no field(s) {unknown}")
        return _evolve(self, changes)

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    @property
    def repeat_spend(self) -> float:
        """Spend on purchase days after the first (Gamma-Gamma's x * m_x)."""
        return self.spend - self.first_day_spend

    def distinct_products(self) -> int:
        """How many distinct products the customer bought (a linear-counting estimate)."""
        return round(distinct_estimate(self.products_bought))

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
        return self.evolve(landmark=landmark, decayed=decayed)

    def with_counts(self, **increments: int) -> CustomerState:
        counts = dict(self.counts)
        for name, inc in increments.items():
            counts[name] = counts.get(name, 0) + inc
        return self.evolve(counts=counts)

    def to_bytes(self) -> bytes:
        from scoring.codec import encode

        return encode(self)

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> CustomerState:
        from scoring.codec import decode

        return decode(raw.encode("latin-1") if isinstance(raw, str) else raw)


def _compile_evolve() -> Callable[[CustomerState, Mapping[str, Any]], CustomerState]:
    # Straight-line code, one line per field, setting the slots directly (the frozen
    # class refuses setattr, its slot descriptors do not): what dataclasses does for
    # __init__, without the keyword-argument call.
    names = [f.name for f in fields(CustomerState)]
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": CustomerState}
    lines = ["def evolve(self, c):", "    new = _new(_cls)"]
    for i, name in enumerate(names):
        scope[f"_set{i}"] = getattr(CustomerState, name).__set__
        lines.append(f"    _set{i}(new, c[{name!r}] if {name!r} in c else self.{name})")
    lines.append("    return new")
    exec("\n".join(lines), scope)
    compiled: Callable[[CustomerState, Mapping[str, Any]], CustomerState] = scope["evolve"]
    return compiled


def _compile_build() -> Callable[..., CustomerState]:
    names = [f.name for f in fields(CustomerState)]
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": CustomerState}
    lines = [f"def build({', '.join(names)}):", "    new = _new(_cls)"]
    for i, name in enumerate(names):
        scope[f"_set{i}"] = getattr(CustomerState, name).__set__
        lines.append(f"    _set{i}(new, {name})")
    lines.append("    return new")
    exec("\n".join(lines), scope)
    compiled: Callable[..., CustomerState] = scope["build"]
    return compiled


_FIELD_NAMES = frozenset(f.name for f in fields(CustomerState))
_evolve = _compile_evolve()
# Every field, positionally in declaration order: the decoder's constructor (twice as
# fast as the keyword __init__ of a frozen dataclass, which matters once per customer
# read).
build_state = _compile_build()
