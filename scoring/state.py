"""Per-customer rolling state and its exact, order-independent time decay.

A decayed sum is kept relative to a per-customer landmark time L: each contribution w at
time t adds ``w * 2**((t - L) / h)``, and the value at time ``now`` is
``S * 2**(-(now - L) / h)``. Addition commutes, so the same events in any order give the
same state (to the last bits of floating-point addition), and nothing is ever rescaled on
read. When an exponent grows past ``REBASE_EXPONENT`` the landmark moves forward.

Every event and evaluation copies a state, so its constructors are generated once at
import (``exec``): a state is filled as an unfrozen draft of the same slots and then
switched to the frozen class, without the frozen dataclass' per-field ``object.__setattr__``
or a keyword call. The same functions as plain code score the same and cost far more
(BENCHMARKS.md, "The state's generated constructors").
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Final, TypeVar

T = TypeVar("T")

DAY_S: Final = 86_400.0
REBASE_EXPONENT = 400.0
# Linear counting over a 64-bit bitmap: n ~ -m ln(zeros / m); a full map reads as this.
_BITMAP_BITS = 64
_BITMAP_FULL = _BITMAP_BITS * math.log(_BITMAP_BITS)


@functools.lru_cache(maxsize=1 << 16)
def bit_of(key: str) -> int:
    """The bitmap bit of a product, game or category id (stable across processes; cached:
    catalogues are small next to the events that name their items)."""
    return 1 << (hashlib.blake2b(key.encode(), digest_size=1).digest()[0] & 63)


def distinct_estimate(bitmap: int) -> float:
    """Linear-counting estimate of how many distinct ids set the bits of ``bitmap``."""
    zeros = _BITMAP_BITS - bitmap.bit_count()
    if zeros == 0:
        return _BITMAP_FULL
    return -_BITMAP_BITS * math.log(zeros / _BITMAP_BITS)


def day_floor(t: float) -> float:
    return math.floor(t / DAY_S) * DAY_S


def slot_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass an ``__init__`` of the same signature that sets
    its slots through their descriptors: what the dataclass' own does through
    ``object.__setattr__``, at about half the cost. For the few classes made for every
    event (records, scorables, outcomes); fields with a default factory are not
    supported."""
    scope: dict[str, Any] = {}
    params, body = [], []
    for i, f in enumerate(fields(cls)):  # type: ignore[arg-type]  # a dataclass, checked by fields()
        if f.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: a default factory is not supported")
        if f.default is MISSING:
            params.append(f.name)
        else:
            scope[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
        scope[f"_set{i}"] = getattr(cls, f.name).__set__
        body.append(f"    _set{i}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body), scope)
    setattr(cls, "__init__", scope["__init__"])  # noqa: B010  # mypy refuses assigning a method
    return cls


# 48 bits: a collision among the few events of one customer's window is ~n^2 / 2^49.
_EVENT_DIGEST_BYTES = 6
# Copying a fresh hasher costs a third less than making one (parameter block and all).
_new_event_hasher = hashlib.blake2b(digest_size=_EVENT_DIGEST_BYTES).copy


def event_digest(event_id: str) -> str:
    """A short digest of an event id for the per-customer duplicate filter: the hex of
    ``blake2b(event_id, digest_size=6)``."""
    hasher = _new_event_hasher()
    hasher.update(event_id.encode())
    return hasher.hexdigest()


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
        # cls(customer_id=..., landmark=..., first_seen=..., last_seen=...), the rest at
        # their defaults, without the keyword call (a new customer per few events).
        return _new_state(customer_id, day_floor(first_event_at), first_event_at, first_event_at)

    def value(self, name: str, half_life_s: float, at: float) -> float:
        """The decayed value of feature ``name`` at time ``at``."""
        scaled = self.decayed.get(name, 0.0)
        if scaled == 0.0:
            return 0.0
        return scaled * math.pow(2.0, -(at - self.landmark) / half_life_s)

    def evolve(self, **changes: Any) -> CustomerState:
        """A copy with ``changes``: ``dataclasses.replace`` without its per-call field
        walk (3-4x faster; the per-event copy is ``evolver``'s, below)."""
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

    def with_counts(self, **increments: int) -> CustomerState:
        counts = dict(self.counts)
        for name, inc in increments.items():
            counts[name] = counts.get(name, 0) + inc
        return self.evolve(counts=counts)


class _Draft:
    """A CustomerState under construction: the same slots, not frozen. A state is built
    as a draft (plain attribute stores, a few times cheaper than the frozen class' slot
    descriptors called one by one) and then becomes a CustomerState by ``__class__``
    assignment, which Python allows between classes of the same slots; nothing else
    ever sees a draft."""

    __slots__ = tuple(f.name for f in fields(CustomerState))


def _compile_new() -> Callable[[str, float, float, float], CustomerState]:
    given = ("customer_id", "landmark", "first_seen", "last_seen")
    scope: dict[str, Any] = {"_Draft": _Draft, "_cls": CustomerState}
    lines = [f"def new({', '.join(given)}):", "    new = _Draft()"]
    for i, f in enumerate(fields(CustomerState)):
        if f.name in given:
            value = f.name
        elif f.default_factory is not MISSING:
            scope[f"_factory{i}"] = f.default_factory
            value = f"_factory{i}()"
        else:
            scope[f"_default{i}"] = f.default
            value = f"_default{i}"
        lines.append(f"    new.{f.name} = {value}")
    lines += ["    new.__class__ = _cls", "    return new"]
    exec("\n".join(lines), scope)
    compiled: Callable[[str, float, float, float], CustomerState] = scope["new"]
    return compiled


def evolver(*given: str) -> Callable[..., CustomerState]:
    """``evolve(state, v1, v2, ..., changes)``: ``state.evolve(name1=v1, ..., **changes)``
    for a caller that always changes the ``given`` fields, and some others in
    ``changes`` (often none or a few: only those are looked at; a ``given`` field
    keeps its argument even if ``changes`` names it). For ``features.fold``, which
    copies the state once per event, and (nothing given) ``CustomerState.evolve``.
    Straight-line code filling a ``_Draft``, without the keyword-argument call."""
    unknown = sorted(set(given) - _FIELD_NAMES)
    if unknown:
        raise TypeError(f"CustomerState has no field(s) {', '.join(unknown)}")
    scope: dict[str, Any] = {
        "_Draft": _Draft,
        "_cls": CustomerState,
        "_known": _FIELD_NAMES,
        "_setattr": setattr,
    }
    lines = [f"def evolve({', '.join(['self', *given, 'c'])}):", "    new = _Draft()"]
    lines.extend(
        f"    new.{f.name} = self.{f.name}" for f in fields(CustomerState) if f.name not in given
    )
    lines.append("    if c:")
    lines.append("        if not _known.issuperset(c):")
    lines.append("            self.evolve(**c)  # which names the unknown fields")
    lines.append("        for name, value in c.items():")
    lines.append("            _setattr(new, name, value)")
    # After the changes: a given field is the argument, whatever ``changes`` says.
    lines.extend(f"    new.{name} = {name}" for name in given)
    lines += ["    new.__class__ = _cls", "    return new"]
    exec("\n".join(lines), scope)
    compiled: Callable[..., CustomerState] = scope["evolve"]
    return compiled


_FIELD_NAMES = frozenset(f.name for f in fields(CustomerState))
_new_state = _compile_new()
_evolve = evolver()


def completer(*names: str) -> Callable[..., CustomerState]:
    """``complete(fresh, v1, v2, ...)``: ``fresh.evolve(name1=v1, name2=v2, ...)`` without
    the copy, for a state its caller has just made (with ``evolve``) and that nothing else
    refers to yet: a state is only ever seen whole. The engine makes one state per event
    this way: folding the event copies the state, and the evaluation that follows fills
    in the rest (copying all ~30 fields costs more than the rest of its bookkeeping).
    The state is a ``_Draft`` while its fields are set."""
    unknown = sorted(set(names) - _FIELD_NAMES)
    if unknown:
        raise TypeError(f"CustomerState has no field(s) {', '.join(unknown)}")
    # The frozen class refuses ``fresh.__class__ = ...``; the descriptor does not.
    scope: dict[str, Any] = {
        "_Draft": _Draft,
        "_cls": CustomerState,
        "_set_class": vars(object)["__class__"].__set__,
    }
    lines = [f"def complete(fresh, {', '.join(names)}):", "    _set_class(fresh, _Draft)"]
    lines.extend(f"    fresh.{name} = {name}" for name in names)
    lines += ["    fresh.__class__ = _cls", "    return fresh"]
    exec("\n".join(lines), scope)
    compiled: Callable[..., CustomerState] = scope["complete"]
    return compiled


def _compile_build() -> Callable[..., CustomerState]:
    names = [f.name for f in fields(CustomerState)]
    lines = [f"def build({', '.join(names)}):", "    new = _Draft()"]
    lines.extend(f"    new.{name} = {name}" for name in names)
    lines += ["    new.__class__ = _cls", "    return new"]
    scope: dict[str, Any] = {"_Draft": _Draft, "_cls": CustomerState}
    exec("\n".join(lines), scope)
    compiled: Callable[..., CustomerState] = scope["build"]
    return compiled


_build = _compile_build()


def build_state(*values: Any) -> CustomerState:
    """Every field, positionally in declaration order: the decoder's constructor (twice as
    fast as the keyword ``__init__`` of a frozen dataclass, which matters once per customer
    read)."""
    return _build(*values)
