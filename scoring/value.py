"""What a customer is worth and how attached they are: RFM tier, loyalty index, CLV.

Pure functions of a state and a time, each with the reasons behind its value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.alerts import Reason
from scoring.config import ScoringConfig
from scoring.model import DAYS_PER_YEAR, BgNbdParams, clv, expected_purchases, simple_clv
from scoring.scores import alive_inputs
from scoring.state import DAY_S, CustomerState

# Tiers from worst to best: a move to a later one is a move up.
TIER_ORDER = ("lost", "hibernating", "at_risk", "promising", "loyal", "champion")


def days_since_purchase(state: CustomerState, at: float) -> float:
    """Days since the start of the last purchase day (UTC), or since the last activity
    for a customer who never bought."""
    since = state.last_purchase_day * DAY_S if state.first_purchase_day >= 0 else state.last_seen
    return max(0.0, at - since) / DAY_S


def tier_of(state: CustomerState, at: float, config: ScoringConfig) -> str:
    """champion, loyal, promising, at_risk, hibernating or lost: recency first (how long
    since the last purchase), then frequency (orders) and monetary value (spend)."""
    t = config.tiers
    days = days_since_purchase(state, at)
    orders = state.count("orders")
    if days > t.lost_after_days:
        return "lost"
    if days > t.hibernating_after_days:
        return "hibernating"
    if days > t.at_risk_after_days:
        return "at_risk"
    if (
        orders >= t.champion_min_orders
        and state.spend >= t.champion_min_spend
        and days <= t.champion_max_days
    ):
        return "champion"
    if orders >= t.loyal_min_orders:
        return "loyal"
    return "promising"


def tier_reasons(state: CustomerState, at: float) -> list[Reason]:
    """The RFM facts a tier is read from (a tier is a class, not a sum: no shares)."""
    return [
        Reason(
            factor="recency",
            detail=f"{days_since_purchase(state, at):.0f} days since the last purchase",
            contribution=0.0,
        ),
        Reason(factor="frequency", detail=f"{state.count('orders')} orders", contribution=0.0),
        Reason(factor="monetary", detail=f"{state.spend:.2f} spent", contribution=0.0),
    ]


def moved_up(before: str, after: str) -> bool:
    return bool(before) and TIER_ORDER.index(after) > TIER_ORDER.index(before)


@dataclass(frozen=True, slots=True)
class Loyalty:
    index: float  # 0..100
    reasons: tuple[Reason, ...]


def loyalty(state: CustomerState, config: ScoringConfig) -> Loyalty:
    """A per-customer Customer Loyalty Index: the weighted mean of recommendation (mean
    NPS / 10, or referrals when never asked), repurchase (repeat purchase days,
    saturating) and upsell (distinct products bought beyond the first, saturating)."""
    c = config.loyalty
    answers = state.count("nps_answers")
    if answers:
        recommendation = state.count("nps_sum") / answers / 10.0
        said = f"mean NPS {10 * recommendation:.1f} over {answers} answers"
    else:
        referrals = state.count("referrals")
        recommendation = 1.0 - math.exp(-referrals)
        said = f"no NPS answer; {referrals} referrals"
    repeat_days = max(0, state.purchase_days - 1)
    repurchase = 1.0 - math.exp(-repeat_days / c.repurchase_saturation)
    products = state.distinct_products()
    upsell = 1.0 - math.exp(-max(0, products - 1) / c.upsell_saturation)
    parts = (
        ("recommendation", c.recommendation_weight, recommendation, said),
        ("repurchase", c.repurchase_weight, repurchase, f"{repeat_days} repeat purchase days"),
        ("upsell", c.upsell_weight, upsell, f"about {products} distinct products bought"),
    )
    total = sum(w for _, w, _, _ in parts)
    if total <= 0:
        return Loyalty(0.0, ())
    reasons = tuple(
        Reason(factor=name, detail=detail, contribution=100.0 * w * value / total)
        for name, w, value, detail in parts
    )
    return Loyalty(sum(r.contribution for r in reasons), reasons)


def _clv_own_order_value(
    params: BgNbdParams, x: int, t_x: float, T: float, order_value: float, config: ScoringConfig
) -> float:
    # model.clv without a Gamma-Gamma fit: the customer's own mean order value.
    c = config.clv
    step = c.horizon_days / c.steps / params.time_unit_days
    total = before = 0.0
    for k in range(1, c.steps + 1):
        by_end = expected_purchases(params, k * step, x, t_x, T)
        years = k * c.horizon_days / c.steps / DAYS_PER_YEAR
        total += (by_end - before) * order_value / math.pow(1.0 + c.annual_discount, years)
        before = by_end
    return total


def customer_clv(state: CustomerState, at: float, config: ScoringConfig) -> tuple[float, Reason]:
    """CLV over ``clv.horizon_days``, discounted, with the reason saying how it was found.

    With a BG/NBD fit: expected purchases (BG/NBD) x expected order value (Gamma-Gamma,
    or the customer's mean order value without that fit). Before a fit: the simple form,
    spend per year (over at least ``min_tenure_days``) x ``expected_lifespan_years``."""
    c = config.clv
    if state.first_purchase_day < 0:
        return 0.0, Reason(factor="clv", detail="no purchase yet", contribution=0.0)
    params, gg = config.model.bgnbd, config.model.gamma_gamma
    if params is None:
        tenure = max(c.min_tenure_days, (at - state.first_purchase_day * DAY_S) / DAY_S)
        per_year = state.spend * DAYS_PER_YEAR / tenure
        value = simple_clv(per_year, c.expected_lifespan_years)
        detail = f"{per_year:.2f} a year x {c.expected_lifespan_years:g} years (no fit yet)"
        return value, Reason(factor="clv", detail=detail, contribution=value)
    inputs = alive_inputs(state, at, config)
    if inputs is None:  # one purchase day: x = 0, t_x = 0
        unit = params.time_unit_days * DAY_S
        x, t_x, T = 0, 0.0, max(0.0, (at - state.first_purchase_day * DAY_S) / unit)
    else:
        x, t_x, T = inputs.x, inputs.t_x, inputs.T
    if gg is not None:
        m_x = state.repeat_spend / x if x else 0.0
        value = clv(params, gg, x, t_x, T, m_x, c.horizon_days, c.annual_discount, c.steps)
        how = "Gamma-Gamma order value"
    else:
        orders = state.count("orders")
        own = state.spend / orders if orders else 0.0
        value = _clv_own_order_value(params, x, t_x, T, own, config)
        how = f"own mean order value {own:.2f}"
    expected = expected_purchases(params, c.horizon_days / params.time_unit_days, x, t_x, T)
    detail = f"{expected:.2f} expected purchases in {c.horizon_days:g} days (BG/NBD) x {how}"
    return value, Reason(factor="clv", detail=detail, contribution=value)
