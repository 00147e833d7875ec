"""Scores: engagement (bounded, monotone, saturating), momentum, explainable churn risk."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import pytest
from churn_states import churn_states
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import ClickstreamEvent
from scoring.config import ScoringConfig, load_config, load_profile
from scoring.engine import apply_event
from scoring.model import BgNbdParams, ModelParams
from scoring.scores import (
    alive_inputs,
    bad_experience_term,
    churn_reasons,
    churn_risk,
    churn_terms,
    churn_value,
    engagement_score,
    momentum,
    recency_weight,
)
from scoring.state import DAY_S, CustomerState
from scoring.thresholds import earliest_check_at

CONFIG = load_config()
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
EVENT_IDS = itertools.count()
CLICK_TYPES = ["page_view", "add_to_cart", "order", "referral", "payment_error", "hologram_view"]


def click(i: int, t: float, kind: str = "page_view") -> ClickstreamEvent:
    when = datetime.fromtimestamp(t, tz=UTC)
    return ClickstreamEvent(event_id=f"e{i}", customer_id="c", occurred_at=when, type=kind)


def history(events: list[tuple[float, str]], start: CustomerState | None = None) -> CustomerState:
    state = start
    for t, kind in events:
        state = apply_event(state, click(next(EVENT_IDS), t, kind), t, t, CONFIG).state
    assert state is not None
    return state


@pytest.fixture(scope="module")
def steady() -> tuple[CustomerState, float]:
    """One page view every six hours for a year: six long momentum half-lives."""
    step = 6 * 3_600.0
    times = [T0 + i * step for i in range(int(365 * DAY_S / step))]
    return history([(t, "page_view") for t in times]), times[-1]


histories = st.lists(
    st.tuples(st.floats(0, 120 * DAY_S), st.sampled_from(CLICK_TYPES)), min_size=1, max_size=30
)


# --- engagement ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(histories, st.floats(0, 200 * DAY_S))
def test_engagement_is_in_0_100(events: list[tuple[float, str]], later: float) -> None:
    state = history([(T0 + t, kind) for t, kind in events])
    score = engagement_score(state, state.last_seen + later, CONFIG)
    assert 0.0 <= score < 100.0


# The features, sub-scores and reasons: tests/unit/scoring/test_scoring_engagement.py.


# --- momentum -----------------------------------------------------------------------------


def test_momentum_is_about_zero_for_steady_activity(steady: tuple[CustomerState, float]) -> None:
    state, last = steady
    for offset in (0.0, 3 * 3_600.0, 6 * 3_600.0 - 1):
        assert abs(momentum(state, last + offset, CONFIG)) < 0.05


def test_momentum_turns_negative_after_silence(steady: tuple[CustomerState, float]) -> None:
    state, last = steady
    values = [momentum(state, last + d * DAY_S, CONFIG) for d in (3, 7, 14, 30)]
    assert all(v < 0 for v in values)
    assert all(b < a for a, b in itertools.pairwise(values))
    assert values[-1] < -0.5


def test_momentum_turns_positive_after_a_burst(steady: tuple[CustomerState, float]) -> None:
    state, last = steady
    burst = [(last + 3_600 + j * 600, "page_view") for j in range(20)]
    after = history(burst, start=state)
    assert momentum(after, after.last_seen, CONFIG) > 0.25


def test_momentum_is_zero_without_history_and_bounded() -> None:
    assert momentum(CustomerState.new("c", T0), T0, CONFIG) == 0.0
    fresh = history([(T0, "page_view")])
    assert momentum(fresh, T0, CONFIG) == 1.0  # a first event is all "recent"
    assert momentum(fresh, T0 + 365 * DAY_S, CONFIG) == pytest.approx(-1.0, abs=1e-3)


# --- churn risk ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(histories, st.floats(0, 400 * DAY_S))
def test_churn_reasons_add_up_to_the_risk(events: list[tuple[float, str]], later: float) -> None:
    state = history([(T0 + t, kind) for t, kind in events])
    assessment = churn_risk(state, state.last_seen + later, CONFIG)
    contributions = [r.contribution for r in assessment.reasons]
    assert {r.factor for r in assessment.reasons} == {"recency", "momentum", "bad_experiences"}
    assert math.isclose(sum(contributions), assessment.churn_risk, rel_tol=1e-12, abs_tol=1e-12)
    # the per-event path computes the same risk without the reasons
    at = state.last_seen + later
    assert math.isclose(churn_value(state, at, CONFIG), assessment.churn_risk, abs_tol=1e-12)
    assert contributions == sorted(contributions, reverse=True)
    assert all(c >= 0 for c in contributions)
    assert 0.0 <= assessment.churn_risk <= 1.0


def test_churn_risk_rises_with_silence(steady: tuple[CustomerState, float]) -> None:
    state, last = steady
    risks = [churn_risk(state, last + h * 3_600.0, CONFIG).churn_risk for h in range(0, 2_400, 6)]
    assert risks[0] < 0.05
    assert all(b > a for a, b in itertools.pairwise(risks))
    c = CONFIG.churn
    # no purchase: p_alive is unknown and its weight goes to recency
    w_recency = recency_weight(CONFIG, None)
    assert w_recency == c.recency_weight + c.alive_weight
    assert risks[-1] == pytest.approx(w_recency + c.momentum_weight, abs=0.01)
    recency = next(r for r in churn_risk(state, last + 14 * DAY_S, CONFIG).reasons)
    assert recency.factor == "recency"
    assert recency.contribution == pytest.approx(w_recency / 2)
    assert "14.0 days" in recency.detail


def test_bad_experiences_raise_churn_risk() -> None:
    calm = history([(T0 + i * 3_600, "page_view") for i in range(5)])
    upset = history([(T0 + i * 3_600, "payment_error") for i in range(5)])
    at = T0 + 5 * 3_600
    assert churn_risk(upset, at, CONFIG).churn_risk > churn_risk(calm, at, CONFIG).churn_risk
    bad = churn_risk(upset, at, CONFIG)
    assert bad.reasons[0].factor == "bad_experiences"
    assert 0 < bad.bad_experiences < 1


# --- the per-event churn terms ------------------------------------------------------------

FITTED = CONFIG.with_model(ModelParams(bgnbd=BgNbdParams(r=0.25, alpha=4.0, a=0.8, b=2.4)))
TERM_CONFIGS = {"retail": CONFIG, "fitted": FITTED, "gaming": load_profile("gaming")}


def same(a: float, b: float) -> bool:
    """Equal to the bit (0.0 and -0.0 differ)."""
    return math.copysign(1.0, a) == math.copysign(1.0, b) and a == b


@settings(max_examples=300, deadline=None)
@given(case=churn_states(TERM_CONFIGS, T0))
def test_churn_terms_are_the_separate_terms_to_the_bit(
    case: tuple[ScoringConfig, float, CustomerState],
) -> None:
    """The engine computes the terms once per evaluation and hands them to the schedule:
    the risk, the bad-experience term and the BG/NBD inputs must be the ones the
    separate functions give, so the risk and the check time are unchanged to the bit."""
    config, at, state = case
    terms = churn_terms(state, at, config)
    assert same(terms.risk, churn_value(state, at, config))
    assert same(terms.bad_experiences, bad_experience_term(state, at, config))
    assert terms.alive == alive_inputs(state, at, config)
    for armed in range(3):
        alone = earliest_check_at(state, at, config, armed, None)
        shared = earliest_check_at(state, at, config, armed, None, terms)
        assert alone == shared


def same_or_none(a: float | None, b: float | None) -> bool:
    return a is b if a is None or b is None else same(a, b) or (a != a and b != b)


@settings(max_examples=300, deadline=None)
@given(case=churn_states(TERM_CONFIGS, T0))
def test_an_alerts_assessment_from_the_terms_is_churn_risk_to_the_bit(
    case: tuple[ScoringConfig, float, CustomerState],
) -> None:
    """An alert's churn risk and reasons are built from the terms its evaluation computed:
    the risk, every part and every reason (its detail and contribution) as churn_risk
    gives them, in the same order."""
    config, at, state = case
    terms = churn_terms(state, at, config)
    want = churn_risk(state, at, config)
    for name in ("recency", "p_alive", "falling_momentum", "bad_experiences"):
        assert same_or_none(getattr(terms, name), getattr(want, name)), name
    # the risk and the fields an alert validates its reasons from (engine._evaluate_churn)
    risk, fields = churn_reasons(state, at, config, terms)
    assert same(risk, want.churn_risk)
    assert [(f, d) for f, d, _ in fields] == [(r.factor, r.detail) for r in want.reasons]
    for (f, _, c), theirs in zip(fields, want.reasons, strict=True):
        assert same_or_none(c, theirs.contribution), f


def test_the_assessment_from_the_terms_is_not_vacuous() -> None:
    """Every reason, p_alive's among them, with open tickets and falling momentum."""
    state = CustomerState(
        "c",
        T0,
        decayed={"short": 0.5, "long": 20.0, "bad": 2.0},
        counts={"tickets_opened": 3, "tickets_resolved": 1},
        last_seen=T0,
        first_purchase_day=int(T0 // DAY_S) - 90,
        last_purchase_day=int(T0 // DAY_S) - 30,
        purchase_days=4,
    )
    at = T0 + 12 * DAY_S
    terms = churn_terms(state, at, FITTED)
    got = churn_risk(state, at, FITTED)
    parts = (terms.recency, terms.p_alive, terms.falling_momentum, terms.bad_experiences)
    assert parts == (got.recency, got.p_alive, got.falling_momentum, got.bad_experiences)
    risk, fields = churn_reasons(state, at, FITTED, terms)
    assert risk == got.churn_risk
    assert fields == [(r.factor, r.detail, r.contribution) for r in got.reasons]
    assert {r.factor for r in got.reasons} == {"recency", "momentum", "bad_experiences", "p_alive"}
    assert all(r.contribution > 0 for r in got.reasons)
    assert "2 open tickets" in next(r.detail for r in got.reasons if r.factor == "bad_experiences")
    assert "3 repeat purchase days" in next(r.detail for r in got.reasons if r.factor == "p_alive")
