"""p_alive in churn, RFM tiers and the loyalty milestone, the loyalty index, CLV."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.alerts import ChurnRiskAlert, InterventionAlert
from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.config import ScoringConfig, load_config
from scoring.engine import Outcome, apply_event, evaluate_due
from scoring.model import BgNbdParams, GammaGammaParams, ModelParams, clv, p_alive, simple_clv
from scoring.scores import alive_probability, churn_risk, churn_value
from scoring.state import DAY_S, CustomerState
from scoring.thresholds import earliest_check_at, next_check_at
from scoring.value import customer_clv, loyalty, tier_of

CONFIG = load_config()
# The CDNOW fit of Fader, Hardie and Lee (2005), in weeks.
BGNBD = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
GG = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)
FIT = CONFIG.with_model(ModelParams(bgnbd=BGNBD, gamma_gamma=GG))
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp()
IDS = itertools.count()
WEEK = 7 * DAY_S


def order(t: float, amount: str = "60.00", products: tuple[str, ...] = ("p1",)) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"o{next(IDS)}",
        customer_id="c",
        occurred_at=datetime.fromtimestamp(t, tz=UTC),
        type="order",
        order_id=f"o{next(IDS)}",
        amount=Decimal(amount),
        currency="EUR",
        items=[{"product_id": p} for p in products],
    )


def nps(t: float, score: int) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=f"f{next(IDS)}",
        customer_id="c",
        occurred_at=datetime.fromtimestamp(t, tz=UTC),
        type="nps",
        score=score,
    )


def view(t: float) -> ClickstreamEvent:
    when = datetime.fromtimestamp(t, tz=UTC)
    return ClickstreamEvent(
        event_id=f"v{next(IDS)}", customer_id="c", occurred_at=when, type="page_view"
    )


def run(events: list[InputEvent], config: ScoringConfig) -> tuple[CustomerState, list[Outcome]]:
    state: CustomerState | None = None
    outcomes = []
    for e in events:
        t = e.occurred_at.timestamp()
        outcome = apply_event(state, e, t, t, config)
        outcomes.append(outcome)
        state = outcome.state
    assert state is not None
    return state, outcomes


# --- BG/NBD inputs and p_alive in churn -----------------------------------------------------


def test_purchase_days_count_once_and_give_x_t_x_and_t() -> None:
    # three orders on day 0 (one day), one on day 14, two on day 35
    times = [T0, T0 + 60, T0 + 3_600, T0 + 14 * DAY_S, T0 + 35 * DAY_S, T0 + 35 * DAY_S + 60]
    state, _ = run([order(t) for t in times], FIT)
    assert state.purchase_days == 3
    assert state.count("orders") == 6
    assert state.spend == 360.0
    assert state.repeat_spend == 180.0  # the orders after the first day
    # any order of the same orders gives the same purchase facts
    shuffled, _ = run([order(t) for t in reversed(times)], FIT)
    facts = ("first_purchase_day", "last_purchase_day", "purchase_days", "spend", "repeat_spend")
    assert [getattr(shuffled, f) for f in facts] == [getattr(state, f) for f in facts]
    at = T0 + 70 * DAY_S
    first_day = math.floor(T0 / DAY_S) * DAY_S
    expected = p_alive(BGNBD, 2, 35 * DAY_S / WEEK, (at - first_day) / WEEK)
    assert alive_probability(state, at, FIT) == pytest.approx(expected, rel=1e-12)
    assert alive_probability(state, at, CONFIG) is None  # no fit yet


def test_churn_uses_1_minus_p_alive_once_fitted_and_recency_before() -> None:
    state, _ = run([order(T0 + d * 10 * DAY_S) for d in range(4)], FIT)
    at = state.last_seen + 60 * DAY_S
    fitted = churn_risk(state, at, FIT)
    assert fitted.p_alive is not None
    reasons = {r.factor: r.contribution for r in fitted.reasons}
    c = FIT.churn
    assert reasons["p_alive"] == pytest.approx(c.alive_weight * (1 - fitted.p_alive))
    assert reasons["recency"] == pytest.approx(c.recency_weight * fitted.recency)
    assert math.isclose(sum(reasons.values()), fitted.churn_risk, abs_tol=1e-12)
    assert churn_value(state, at, FIT) == pytest.approx(fitted.churn_risk, abs=1e-12)
    before = churn_risk(state, at, CONFIG)
    assert before.p_alive is None
    assert {r.factor for r in before.reasons} == {"recency", "momentum", "bad_experiences"}
    assert dict((r.factor, r.contribution) for r in before.reasons)["recency"] == pytest.approx(
        (c.recency_weight + c.alive_weight) * before.recency
    )


def test_a_one_day_buyer_is_scored_on_recency_even_with_a_fit() -> None:
    state, _ = run([order(T0), order(T0 + 60)], FIT)
    at = T0 + 40 * DAY_S
    assert alive_probability(state, at, FIT) is None
    assert churn_risk(state, at, FIT).churn_risk == churn_risk(state, at, CONFIG).churn_risk


@pytest.mark.parametrize("gap_days", [3.0, 10.0, 30.0])
@pytest.mark.parametrize("level", [0, 1])
def test_the_cheap_bound_stays_below_the_exact_check_with_p_alive(
    gap_days: float, level: int
) -> None:
    events: list[InputEvent] = [order(T0 + i * gap_days * DAY_S) for i in range(5)]
    events += [view(T0 + 4 * gap_days * DAY_S + 3_600)]
    state, _ = run(events, FIT)
    _assert_schedule_sound(state.evolve(churn_level=level), level)


def _assert_schedule_sound(state: CustomerState, level: int) -> None:
    """The cheap bound comes no later than the exact check, and the exact check no later
    than the risk reaching the next level (brute force on a ten-minute grid)."""
    at = state.evaluated_at
    exact = next_check_at(state, at, FIT)
    bound = earliest_check_at(state, at, FIT)
    assert exact is not None and bound is not None
    assert bound <= exact
    target = (FIT.churn.thresholds.elevated, FIT.churn.thresholds.high)[level]
    t = at
    while t < exact - 120:
        assert churn_value(state, t, FIT) < target, (t - at) / DAY_S
        t += 600


def test_a_silent_repeat_buyer_gets_an_inactivity_alert_naming_p_alive() -> None:
    state, _ = run([order(T0 + i * 7 * DAY_S) for i in range(6)], FIT)
    swept = evaluate_due(state, state.last_seen + 200 * DAY_S, 0.0, FIT)
    alerts = [a for a in swept.alerts if isinstance(a, ChurnRiskAlert)]
    assert [a.level for a in alerts] == ["elevated", "high"]
    factors = {r.factor for r in alerts[0].reasons}
    assert "p_alive" in factors
    assert alerts[0].p_alive is not None and alerts[0].p_alive < 1.0
    assert alerts[0].tier is not None


# --- tiers and the loyalty milestone ----------------------------------------------------------


def test_tiers_follow_recency_frequency_and_spend() -> None:
    t = CONFIG.tiers
    state, _ = run([order(T0 + i * DAY_S, "80.00") for i in range(t.champion_min_orders)], CONFIG)
    last = state.last_seen
    assert tier_of(state, last, CONFIG) == "champion"
    assert tier_of(state, last + (t.champion_max_days + 1) * DAY_S, CONFIG) == "loyal"
    assert tier_of(state, last + (t.at_risk_after_days + 1) * DAY_S, CONFIG) == "at_risk"
    assert tier_of(state, last + (t.hibernating_after_days + 1) * DAY_S, CONFIG) == "hibernating"
    assert tier_of(state, last + (t.lost_after_days + 1) * DAY_S, CONFIG) == "lost"
    browser, _ = run([view(T0)], CONFIG)
    assert tier_of(browser, T0, CONFIG) == "promising"
    small, _ = run([order(T0 + i * DAY_S, "1.00") for i in range(6)], CONFIG)
    assert tier_of(small, small.last_seen, CONFIG) == "loyal"  # frequent, not enough spend


def test_moving_up_into_champion_raises_one_loyalty_milestone() -> None:
    n = CONFIG.tiers.champion_min_orders
    events: list[InputEvent] = [order(T0 + i * DAY_S, "80.00") for i in range(n + 2)]
    state, outcomes = run(events, CONFIG)
    milestones = [
        (i, a)
        for i, o in enumerate(outcomes)
        for a in o.alerts
        if isinstance(a, InterventionAlert) and a.kind == "loyalty_milestone"
    ]
    assert [i for i, _ in milestones] == [n - 1]
    alert = milestones[0][1]
    assert alert.recommended_action == "reward"
    assert alert.customer.tier == "champion"
    assert alert.reasons[0].detail == "moved up from loyal to champion"
    assert state.tier == "champion"
    # the id is the trigger's: a replay of the same events gives the same alert
    _, replayed = run(events, CONFIG)
    assert [a.alert_id for o in replayed for a in o.alerts] == [
        a.alert_id for o in outcomes for a in o.alerts
    ]
    assert state.last_alert_at["loyalty_milestone"] == T0 + (n - 1) * DAY_S


# --- loyalty index ----------------------------------------------------------------------------


def test_loyalty_is_the_weighted_mean_of_recommendation_repurchase_and_upsell() -> None:
    events: list[InputEvent] = [
        order(T0, products=("p1",)),
        order(T0 + 10 * DAY_S, products=("p2", "p3")),
        nps(T0 + 11 * DAY_S, 9),
        nps(T0 + 12 * DAY_S, 7),
    ]
    state, _ = run(events, CONFIG)
    result = loyalty(state, CONFIG)
    c = CONFIG.loyalty
    products = state.distinct_products()
    assert products == 3
    parts = [
        0.8,
        1 - math.exp(-1 / c.repurchase_saturation),
        1 - math.exp(-2 / c.upsell_saturation),
    ]
    assert result.index == pytest.approx(100 * sum(parts) / 3)
    assert math.isclose(sum(r.contribution for r in result.reasons), result.index)
    assert [r.factor for r in result.reasons] == ["recommendation", "repurchase", "upsell"]


# --- CLV ---------------------------------------------------------------------------------------


def test_clv_before_a_fit_is_value_per_year_times_lifespan() -> None:
    state, _ = run([order(T0, "100.00"), order(T0 + 60 * DAY_S, "100.00")], CONFIG)
    at = state.last_seen
    days = (at - math.floor(T0 / DAY_S) * DAY_S) / DAY_S
    value, reason = customer_clv(state, at, CONFIG)
    assert value == pytest.approx(simple_clv(200.0 * 365 / days, 3.0))
    assert reason.contribution == value
    assert state.clv == pytest.approx(value)  # stored by the purchase event
    one, _ = run([order(T0, "30.00")], CONFIG)
    assert one.clv == pytest.approx(30.0 * 365 / CONFIG.clv.min_tenure_days * 3.0)


def test_clv_with_a_fit_is_the_models_and_is_stored_on_purchases_only() -> None:
    state, _ = run([order(T0 + i * 14 * DAY_S, "40.00") for i in range(4)], FIT)
    at = state.last_seen
    first = math.floor(T0 / DAY_S) * DAY_S
    expected = clv(BGNBD, GG, 3, 42 * DAY_S / WEEK, (at - first) / WEEK, 40.0)
    assert customer_clv(state, at, FIT)[0] == pytest.approx(expected, rel=1e-12)
    assert state.clv == pytest.approx(expected, rel=1e-12)
    clicked = apply_event(state, view(at + DAY_S), at + DAY_S, at + DAY_S, FIT).state
    assert clicked.clv == state.clv  # a click does not recompute it
    swept = evaluate_due(clicked, clicked.last_seen + 90 * DAY_S, 0.0, FIT).state
    assert swept.clv < state.clv  # an inactivity check does, and silence lowers it


def test_kpi_counters_have_their_names() -> None:
    events: list[InputEvent] = [
        order(T0),
        nps(T0 + 1, 10),
        nps(T0 + 2, 3),
        FeedbackEvent(
            event_id="cs", customer_id="c", occurred_at=datetime.fromtimestamp(T0 + 3, tz=UTC),
            type="csat", score=4,
        ),
        PurchaseEvent(
            event_id="rf", customer_id="c", occurred_at=datetime.fromtimestamp(T0 + 4, tz=UTC),
            type="refund", order_id="o", amount=Decimal(1), currency="EUR",
        ),
    ]  # fmt: skip
    state, _ = run(events, CONFIG)
    c = state.counts
    assert (c["events"], c["orders"], c["returns"]) == (5, 1, 1)
    assert (c["nps_answers"], c["promoters"], c["detractors"]) == (2, 1, 1)
    assert (c["csat_answers"], c["csat_satisfied"]) == (1, 1)
    assert state.tier == "promising" and state.distinct_products() == 1


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(0, 120), min_size=2, max_size=10),
    st.lists(st.floats(0, 120), max_size=6),
    st.integers(0, 1),
)
def test_with_a_fit_the_schedule_never_misses_a_crossing(
    order_days: list[float], click_days: list[float], level: int
) -> None:
    events: list[InputEvent] = [order(T0 + d * DAY_S) for d in order_days]
    events += [view(T0 + d * DAY_S) for d in click_days]
    state, _ = run(sorted(events, key=lambda e: e.occurred_at), FIT)
    _assert_schedule_sound(state.evolve(churn_level=level), level)
