"""Population KPIs (NPS, CSAT %, repurchase rate, ...) as ratios of sums over customers.

Every KPI is a ratio of two population counters, and every counter is a sum over customers
of something read off one customer's state:

- an *event counter* of the state (NPS answers, sessions, orders, ...): cumulative, so what
  one state change adds is ``after - before``;
- a *customer flag* (is a buyer, a repurchaser, in tier X, ...) or value (CLV): a state
  change moves the customer out of what ``before`` counted and into what ``after`` counts,
  i.e. ``flag(after) - flag(before)`` (``before`` is ``None`` for a new customer).

So the population counters can be kept incrementally, as the sum of ``deltas`` of every
state change, and equal at any time the batch sum of ``deltas(None, state)`` over the
current states. Pure: no I/O, no clock.

Definitions (see docs of the domain):

- ``nps`` = (promoters - detractors) / NPS answers x 100 (promoters 9-10, detractors 0-6);
- ``csat_pct`` = CSAT answers 4 or 5 / CSAT answers x 100;
- ``repurchase_rate`` = customers with more than one order / customers x 100;
- ``upsell_ratio`` = customers who bought more than one distinct product / customers who
  bought exactly one (a plain ratio, not a percentage);
- ``cli`` (Customer Loyalty Index) = the plain average of ``nps``, ``repurchase_rate`` and
  ``upsell_ratio``, as the domain defines it; note the upsell ratio is not a percentage, so
  it weighs little next to the two others;
- ``avg_clv`` = sum of the customers' CLV (as of their last evaluation) / customers;
- ``conversion_rate`` = sessions with an order / sessions x 100;
- ``return_rate`` = returns and refunds / orders x 100;
- ``bounce_rate`` = single-page sessions / sessions x 100;
- ``returning_visitor_rate`` = customers with more than one session / customers with at
  least one session x 100;
- ``customers`` and ``customers_<tier>`` for each tier.

A ratio whose denominator is 0 is ``None`` (undefined), and so is the CLI when any of its
three parts is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from scoring.state import CustomerState

TIERS = ("champion", "loyal", "promising", "at_risk", "hibernating", "lost")

# Cumulative counters of CustomerState.counts (kept by the engine) that KPIs are made of.
EVENT_COUNTERS = (
    "orders",
    "returns",
    "sessions",
    "bounces",
    "conversions",
    "nps_answers",
    "promoters",
    "detractors",
    "csat_answers",
    "csat_satisfied",
)
# Per-customer flags and values; ``tier_<name>`` ones are added for the customer's tier.
CUSTOMER_COUNTERS = (
    "customers",
    "visitors",
    "returning_visitors",
    "buyers",
    "repurchasers",
    "single_product",
    "multi_product",
    "clv_sum",
)
TIER_PREFIX: Final = "tier_"

RATE_KPIS = (
    "nps",
    "csat_pct",
    "repurchase_rate",
    "upsell_ratio",
    "cli",
    "avg_clv",
    "conversion_rate",
    "return_rate",
    "bounce_rate",
    "returning_visitor_rate",
)


def event_counts(state: CustomerState | None) -> dict[str, float]:
    """The state's event counters that KPIs use (absent ones are 0)."""
    if state is None:
        return {}
    counts = state.counts
    return {name: float(counts.get(name, 0)) for name in EVENT_COUNTERS}


def customer_flags(state: CustomerState | None) -> dict[str, float]:
    """What this one customer adds to the customer-level counters (nothing when ``None``);
    the flags that are off are left out."""
    if state is None:
        return {}
    counts = state.counts
    flags = {"customers": 1.0}
    sessions = counts.get("sessions", 0)
    if sessions >= 1:
        flags["visitors"] = 1.0
        if sessions > 1:
            flags["returning_visitors"] = 1.0
    orders = counts.get("orders", 0)
    if orders >= 1:
        flags["buyers"] = 1.0
        if orders > 1:
            flags["repurchasers"] = 1.0
    products = state.distinct_products()
    if products == 1:
        flags["single_product"] = 1.0
    elif products > 1:
        flags["multi_product"] = 1.0
    if state.clv:
        flags["clv_sum"] = state.clv
    if state.tier:
        flags[TIER_PREFIX + state.tier] = 1.0
    return flags


def flag_changes(before: CustomerState, after: CustomerState) -> dict[str, float]:
    """``diff(customer_flags(after), customer_flags(before))`` without building either
    (the scorer moves every customer of a batch): the same values, the same subtractions."""
    out: dict[str, float] = {}
    old, new = before.counts, after.counts
    for counter, (first, repeat) in _LADDERS.items():
        b, a = old.get(counter, 0), new.get(counter, 0)
        if a != b:
            _step(out, first, b >= 1, a >= 1)
            _step(out, repeat, b > 1, a > 1)
    if before.products_bought != after.products_bought:
        b_products, a_products = before.distinct_products(), after.distinct_products()
        _step(out, "single_product", b_products == 1, a_products == 1)
        _step(out, "multi_product", b_products > 1, a_products > 1)
    b_clv = before.clv if before.clv else 0.0
    a_clv = after.clv if after.clv else 0.0
    clv = a_clv - b_clv
    if clv != 0.0:
        out["clv_sum"] = clv
    if before.tier != after.tier:
        if before.tier:
            out[TIER_PREFIX + before.tier] = -1.0
        if after.tier:
            out[TIER_PREFIX + after.tier] = 1.0
    return out


# The flags a count sets: at least one, and more than one.
_LADDERS = {"sessions": ("visitors", "returning_visitors"), "orders": ("buyers", "repurchasers")}


def _step(out: dict[str, float], flag: str, was: bool, is_: bool) -> None:
    if was != is_:
        out[flag] = 1.0 if is_ else -1.0


def diff(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """``after - before`` per name, without the zeros."""
    out: dict[str, float] = {}
    for name in after.keys() | before.keys():
        delta = after.get(name, 0.0) - before.get(name, 0.0)
        if delta != 0.0:
            out[name] = delta
    return out


def deltas(before: CustomerState | None, after: CustomerState) -> dict[str, float]:
    """What a customer's state change from ``before`` (``None``: a new customer) to
    ``after`` adds to each population counter; zeros left out."""
    return {
        **diff(event_counts(after), event_counts(before)),
        **diff(customer_flags(after), customer_flags(before)),
    }


def _ratio(numerator: float, denominator: float, scale: float = 1.0) -> float | None:
    return None if denominator == 0 else numerator / denominator * scale


def kpis(counters: Mapping[str, float]) -> dict[str, float | None]:
    """Every KPI from summed counters (see the module docstring for the definitions)."""
    c = counters.get
    nps = _ratio(c("promoters", 0.0) - c("detractors", 0.0), c("nps_answers", 0.0), 100.0)
    repurchase = _ratio(c("repurchasers", 0.0), c("customers", 0.0), 100.0)
    upsell = _ratio(c("multi_product", 0.0), c("single_product", 0.0))
    parts = (nps, repurchase, upsell)
    out: dict[str, float | None] = {
        "nps": nps,
        "csat_pct": _ratio(c("csat_satisfied", 0.0), c("csat_answers", 0.0), 100.0),
        "repurchase_rate": repurchase,
        "upsell_ratio": upsell,
        "cli": None if None in parts else sum(p for p in parts if p is not None) / 3.0,
        "avg_clv": _ratio(c("clv_sum", 0.0), c("customers", 0.0)),
        "conversion_rate": _ratio(c("conversions", 0.0), c("sessions", 0.0), 100.0),
        "return_rate": _ratio(c("returns", 0.0), c("orders", 0.0), 100.0),
        "bounce_rate": _ratio(c("bounces", 0.0), c("sessions", 0.0), 100.0),
        "returning_visitor_rate": _ratio(c("returning_visitors", 0.0), c("visitors", 0.0), 100.0),
        "customers": c("customers", 0.0),
    }
    tiers = [*TIERS, *sorted(n[len(TIER_PREFIX) :] for n in counters if n.startswith(TIER_PREFIX))]
    for tier in dict.fromkeys(tiers):
        out[f"customers_{tier}"] = c(TIER_PREFIX + tier, 0.0)
    return out
