"""Threshold crossing with hysteresis and cooldown; when a silent customer is next checked."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.alerts import ChurnRiskAlert
from schemas.events import ClickstreamEvent
from scoring import codec
from scoring.config import ChurnThresholds, ScoringConfig, load_config
from scoring.engine import Alert, apply_event, evaluate_due, settle
from scoring.scores import BAD_EXPERIENCES, churn_risk
from scoring.state import DAY_S, CustomerState
from scoring.thresholds import (
    _CHECK_RESOLUTION_S,
    decide_churn,
    earliest_check_at,
    level_of,
    next_check_at,
    threshold_of,
)

CONFIG = load_config()
THRESHOLDS = CONFIG.churn.thresholds  # elevated 0.5, high 0.75, margin 0.1, cooldown 7 days
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
HOUR = 3_600.0
EVENT_IDS = itertools.count()


def run(
    steps: Sequence[tuple[float, float]], thresholds: ChurnThresholds = THRESHOLDS
) -> list[tuple[float, int]]:
    """Feed (day, risk) pairs through decide_churn as the engine does; the alerts raised."""
    armed, last_alert_at = 0, None
    alerts = []
    for day, risk in steps:
        at = T0 + day * DAY_S
        decision = decide_churn(armed, risk, last_alert_at, at, thresholds)
        if decision.alert_level is not None:
            alerts.append((day, decision.alert_level))
            last_alert_at = at
        armed = decision.armed_level
    return alerts


def test_levels_and_thresholds() -> None:
    assert [level_of(r, THRESHOLDS) for r in (0.0, 0.49, 0.5, 0.74, 0.75, 1.0)] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    assert threshold_of(1, THRESHOLDS) == 0.5
    assert threshold_of(2, THRESHOLDS) == 0.75


def test_hovering_around_a_threshold_alerts_once() -> None:
    risks = [0.49, 0.51, 0.49, 0.52, 0.48, 0.51, 0.45, 0.5, 0.41, 0.55, 0.4, 0.53] * 5
    steps = [(i * 0.5, r) for i, r in enumerate(risks)]  # 30 days: the cooldown is not why
    assert run(steps) == [(0.5, 1)]


def test_falling_below_threshold_minus_margin_rearms() -> None:
    steps = [(0, 0.51), (8, 0.45), (9, 0.4), (10, 0.52), (11, 0.39), (12, 0.45), (13, 0.5)]
    # 0.4 is not below 0.5 - 0.1: still armed-off; 0.39 is, and the next rise alerts again
    assert run(steps) == [(0, 1), (13, 1)]


def test_cooldown_defers_a_rearmed_crossing() -> None:
    steps = [(0, 0.6), (1, 0.2), (3, 0.55), (6.99, 0.56), (7, 0.57), (7.5, 0.58)]
    assert run(steps) == [(0, 1), (7, 1)]
    assert run(steps, THRESHOLDS.model_copy(update={"cooldown_days": 0.0})) == [(0, 1), (3, 1)]


def test_elevated_then_high_gives_two_alerts() -> None:
    assert run([(0, 0.55), (8, 0.6), (9, 0.8), (10, 0.9)]) == [(0, 1), (9, 2)]
    # a jump straight past both thresholds is one (high) alert
    assert run([(0, 0.1), (1, 0.9), (2, 0.95)]) == [(1, 2)]


def test_escalation_is_not_held_back_by_the_cooldown() -> None:
    # Going from elevated to high is news marketing needs now; the cooldown only holds
    # back a re-armed customer crossing again.
    assert run([(0, 0.55), (2, 0.8), (6, 0.85), (7, 0.85)]) == [(0, 1), (2, 2)]


def test_a_rearmed_crossing_within_the_cooldown_waits_for_it() -> None:
    assert run([(0, 0.55), (1, 0.3), (2, 0.8), (6, 0.85), (7, 0.85)]) == [(0, 1), (7, 2)]


def test_high_falls_back_one_level_at_a_time() -> None:
    d = decide_churn(2, 0.6, T0, T0 + DAY_S, THRESHOLDS)
    assert (d.armed_level, d.alert_level) == (1, None)
    d = decide_churn(2, 0.3, T0, T0 + DAY_S, THRESHOLDS)
    assert (d.armed_level, d.alert_level) == (0, None)
    d = decide_churn(2, 0.7, T0, T0 + 30 * DAY_S, THRESHOLDS)
    assert (d.armed_level, d.alert_level) == (2, None)


# --- next_check_at ------------------------------------------------------------------------

# The search resolves the crossing to one minute and rounds up to a whole second, so that
# a check at the returned time finds the risk at the threshold: it may land up to this
# much after the instant of the crossing, never more.
TOLERANCE_S = _CHECK_RESOLUTION_S + 1.0


def customer(events: list[tuple[float, str]], config: ScoringConfig = CONFIG) -> CustomerState:
    state: CustomerState | None = None
    for t, kind in sorted(events):
        when = datetime.fromtimestamp(t, tz=UTC)
        event = ClickstreamEvent(
            event_id=f"e{next(EVENT_IDS)}", customer_id="c", occurred_at=when, type=kind
        )
        state = apply_event(state, event, t, t, config).state
    assert state is not None
    return settle(state, config)  # the exact schedule, as stored


def first_crossing(state: CustomerState, at: float, config: ScoringConfig) -> float | None:
    """Brute force: the first whole second after ``at`` at which the next level could fire.

    Scans the silent customer's risk (scoring.scores.churn_risk) on a ten-minute grid, then
    second by second back through the ten minutes before the first grid point found (risk
    moves by far less than a threshold's width in ten minutes).
    """
    t = config.churn.thresholds
    target = threshold_of(state.churn_level + 1, t)
    last = state.last_alert_at.get("churn_risk")
    not_before = -1.0 if last is None else last + t.cooldown_days * DAY_S

    def fires(when: float) -> bool:
        return when >= not_before and churn_risk(state, when, config).churn_risk >= target

    step = 600
    end = at + t.max_check_interval_days * DAY_S
    point = int(at)
    while point <= end:
        if fires(point):
            return float(next(s for s in range(max(point - step, int(at)), point + 1) if fires(s)))
        point += step
    return None


def levels(alerts: Sequence[Alert]) -> list[str]:
    return [a.level for a in alerts if isinstance(a, ChurnRiskAlert)]


def check_schedule(state: CustomerState, config: ScoringConfig = CONFIG) -> float | None:
    at = state.evaluated_at
    scheduled = next_check_at(state, at, config)
    assert scheduled == state.next_check_at  # what the engine stored
    assert scheduled is not None
    assert at + _CHECK_RESOLUTION_S <= scheduled
    assert scheduled <= at + config.churn.thresholds.max_check_interval_days * DAY_S
    assert scheduled == int(scheduled)
    crossing = first_crossing(state, at, config)
    if crossing is not None:
        assert scheduled <= crossing + TOLERANCE_S, (scheduled - crossing) / DAY_S
    return crossing


def test_next_check_of_a_customer_without_bad_experiences_is_at_the_crossing() -> None:
    state = customer([(T0 + d * DAY_S, "page_view") for d in (0, 0.5, 1, 3, 3.2, 7, 9)])
    crossing = check_schedule(state)
    assert crossing is not None
    assert state.next_check_at is not None
    # Exact here (no fading term to bound): not early either, and the check then fires.
    assert crossing - 1 <= state.next_check_at
    due = evaluate_due(state, state.next_check_at, 0.0, CONFIG)
    assert levels(due.alerts) == ["elevated"]
    assert due.alerts[0].occurred_at.timestamp() == state.next_check_at
    assert due.state.churn_level == 1


def test_next_check_with_bad_experiences_is_not_after_the_crossing() -> None:
    # Fading bad experiences: the schedule holds them at today's weight, an upper bound of
    # the risk, so the check comes early (and is rescheduled) rather than late.
    state = customer([(T0 + h * HOUR, "payment_error") for h in range(6)])
    assert state.decayed[BAD_EXPERIENCES] > 0
    crossing = check_schedule(state)
    assert crossing is not None and state.next_check_at is not None
    assert state.next_check_at < crossing - DAY_S
    # Following the schedule of early checks reaches the alert within the resolution.
    due = evaluate_due(state, crossing + TOLERANCE_S, 0.0, CONFIG)
    assert len(due.alerts) == 1
    assert crossing <= due.alerts[0].occurred_at.timestamp() <= crossing + TOLERANCE_S


def test_next_check_after_an_elevated_alert_targets_high_after_the_cooldown() -> None:
    state = customer([(T0, "page_view"), (T0 + DAY_S, "search_no_results")])
    elevated = evaluate_due(state, T0 + 60 * DAY_S, 0.0, CONFIG)
    first = elevated.alerts[0]
    assert levels([first]) == ["elevated"]
    at = first.occurred_at.timestamp()
    # the state just after the elevated alert
    after = settle(evaluate_due(state, at, 0.0, CONFIG).state, CONFIG)
    assert after.churn_level == 1
    crossing = check_schedule(after)
    assert after.next_check_at is not None and crossing is not None
    assert after.next_check_at >= at + THRESHOLDS.cooldown_days * DAY_S
    assert churn_risk(after, crossing, CONFIG).churn_risk >= THRESHOLDS.high


def test_next_check_is_at_most_the_max_interval_away() -> None:
    config = CONFIG.model_copy(
        update={
            "churn": CONFIG.churn.model_copy(
                update={"thresholds": THRESHOLDS.model_copy(update={"max_check_interval_days": 3})}
            )
        }
    )
    state = customer([(T0, "page_view"), (T0 + HOUR, "order")], config)
    assert state.next_check_at == state.evaluated_at + 3 * DAY_S
    assert first_crossing(state, state.evaluated_at, config) is None


def test_next_check_is_deterministic_and_none_once_high() -> None:
    state = customer([(T0 + d * DAY_S, "add_to_cart") for d in (0, 2, 5)])
    at = state.evaluated_at
    assert next_check_at(state, at, CONFIG) == next_check_at(state, at, CONFIG)
    assert next_check_at(codec.decode(codec.encode(state)), at, CONFIG) == (state.next_check_at)
    assert next_check_at(replace(state, churn_level=2), at, CONFIG) is None
    high = evaluate_due(state, at + 365 * DAY_S, 0.0, CONFIG)
    assert levels(high.alerts) == ["elevated", "high"]
    assert high.state.churn_level == 2
    assert high.state.next_check_at is None


KINDS = ["page_view", "order", "add_to_cart", "payment_error", "error_page", "search_no_results"]


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 60 * DAY_S), st.sampled_from(KINDS)), min_size=1, max_size=12)
)
def test_next_check_is_never_after_the_first_crossing(events: list[tuple[float, str]]) -> None:
    state = customer([(T0 + t, kind) for t, kind in events])
    if state.churn_level >= 2:
        pytest.skip("already high")
    check_schedule(state)


@settings(max_examples=60, deadline=None)
@given(
    days=st.lists(st.floats(min_value=0, max_value=120), min_size=1, max_size=12),
    kinds=st.lists(st.sampled_from(KINDS), min_size=12, max_size=12),
    level=st.integers(min_value=0, max_value=1),
)
def test_the_cheap_bound_is_never_after_the_exact_check(
    days: list[float], kinds: list[str], level: int
) -> None:
    state = replace(
        customer([(T0 + d * DAY_S, k) for d, k in zip(days, kinds, strict=False)]),
        churn_level=level,
    )
    at = state.evaluated_at
    exact = next_check_at(state, at, CONFIG)
    bound = earliest_check_at(state, at, CONFIG)
    assert exact is not None and bound is not None
    assert bound <= exact
