"""The engine: dedup, deterministic alert ids, intervention rules, inactivity checks."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from schemas.alerts import ChurnRiskAlert, InterventionAlert
from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.config import ScoringConfig, load_config
from scoring.engine import (
    Alert,
    Outcome,
    _intervene,
    alert_id,
    apply_event,
    evaluate_due,
    settle,
    sweep_due,
)
from scoring.scores import churn_risk
from scoring.state import DAY_S, CustomerState

CONFIG = load_config()
T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC).timestamp()
HOUR = 3_600.0
EMITTED = T0 + 123.0


def dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def click(event_id: str, t: float, kind: str = "page_view", **extra: Any) -> ClickstreamEvent:
    return ClickstreamEvent(
        event_id=event_id, customer_id="c1", occurred_at=dt(t), type=kind, **extra
    )


def purchase(event_id: str, t: float, kind: str = "order") -> PurchaseEvent:
    return PurchaseEvent(
        event_id=event_id,
        customer_id="c1",
        occurred_at=dt(t),
        type=kind,
        order_id="o-77",
        amount=Decimal("49.90"),
        currency="EUR",
    )


def feedback(event_id: str, t: float, kind: str, **fields: Any) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=event_id,
        customer_id="c1",
        occurred_at=dt(t),
        type=kind,
        **fields,
    )


def apply(
    state: CustomerState | None,
    event: InputEvent,
    now: float | None = None,
    config: ScoringConfig = CONFIG,
) -> Outcome:
    clock = event.occurred_at.timestamp() if now is None else now
    return apply_event(state, event, clock, EMITTED, config)


def interventions(outcome: Outcome) -> list[InterventionAlert]:
    return [a for a in outcome.alerts if isinstance(a, InterventionAlert)]


def churn_alerts(alerts: tuple[Alert, ...] | list[Alert]) -> list[ChurnRiskAlert]:
    return [a for a in alerts if isinstance(a, ChurnRiskAlert)]


def regular(days: int = 10) -> CustomerState:
    """A customer with a few days of ordinary activity and no alerts."""
    state: CustomerState | None = None
    for d in range(days):
        outcome = apply(state, click(f"warm-{d}", T0 + d * DAY_S, "product_view"))
        assert outcome.alerts == ()
        state = outcome.state
    assert state is not None
    return state


# --- dedup --------------------------------------------------------------------------------


def test_a_redelivered_event_counts_once_within_the_window() -> None:
    event = click("e1", T0)
    first = apply(None, event, T0)
    again = apply(first.state, event, T0 + HOUR)
    assert not first.duplicate and again.duplicate
    assert again.alerts == ()
    assert again.state.counts == first.state.counts == {"events": 1}
    assert again.state.decayed == first.state.decayed
    at_the_edge = apply(first.state, event, T0 + CONFIG.dedup.window_s)
    assert at_the_edge.duplicate


def test_after_the_window_the_same_event_id_counts_again() -> None:
    event = click("e1", T0)
    first = apply(None, event, T0)
    later = apply(first.state, event, T0 + CONFIG.dedup.window_s + 1)
    assert not later.duplicate
    assert later.state.counts["events"] == 2


def test_the_duplicate_filter_forgets_old_events() -> None:
    state = apply(None, click("old", T0)).state
    state = apply(state, click("new", T0 + 2 * DAY_S)).state
    assert len(state.recent_events) == 1


# --- alert ids ----------------------------------------------------------------------------


def journey() -> list[Alert]:
    state = regular(3)
    alerts: list[Alert] = []
    for event in (
        feedback("nps-1", T0 + 3 * DAY_S, "nps", score=2),
        click("err-1", T0 + 3 * DAY_S + HOUR, "payment_error", page="/pay"),
        purchase("ret-1", T0 + 4 * DAY_S, "return"),
        feedback("nps-2", T0 + 6 * DAY_S, "nps", score=5),
    ):
        outcome = apply(state, event)
        state, alerts = outcome.state, alerts + list(outcome.alerts)
    alerts += list(evaluate_due(state, T0 + 120 * DAY_S, EMITTED, CONFIG).alerts)
    return alerts


def test_alert_ids_are_deterministic_and_differ_per_trigger() -> None:
    first, second = journey(), journey()
    assert first == second  # same inputs: same alerts, ids included
    kinds = [a.kind for a in first]
    assert kinds.count("detractor_feedback") == 2
    assert kinds.count("churn_risk") == 2
    ids = [a.alert_id for a in first]
    assert len(set(ids)) == len(ids)
    assert alert_id("c1", "low_csat", "e1") == alert_id("c1", "low_csat", "e1")
    assert alert_id("c1", "low_csat", "e1") != alert_id("c2", "low_csat", "e1")
    assert alert_id("c1", "low_csat", "e1") != alert_id("c1", "low_csat", "e2")


def test_a_replayed_trigger_gets_the_same_id_again() -> None:
    state = regular(3)
    nps = feedback("nps-1", T0 + 3 * DAY_S, "nps", score=1)
    a = interventions(apply(state, nps))
    b = interventions(apply(state, nps))
    assert len(a) == 1 and a == b


# --- intervention rules -------------------------------------------------------------------

AT = T0 + 10 * DAY_S
RULES: list[tuple[InputEvent, str, str]] = [
    (feedback("f", AT, "nps", score=6), "detractor_feedback", "medium"),
    (feedback("f", AT, "nps", score=0), "detractor_feedback", "high"),
    (feedback("f", AT, "csat", score=2), "low_csat", "medium"),
    (feedback("f", AT, "csat", score=1), "low_csat", "medium"),
    (feedback("f", AT, "review", rating=2), "negative_review", "medium"),
    (feedback("f", AT, "review", rating=1, sentiment=-0.9), "negative_review", "medium"),
    (purchase("p", AT, "return"), "product_return", "low"),
    (purchase("p", AT, "refund"), "product_return", "low"),
    (click("k", AT, "payment_error", page="/checkout"), "bad_experience", "high"),
    (click("k", AT, "error_page"), "bad_experience", "medium"),
    (click("k", AT, "search_no_results"), "bad_experience", "low"),
    (
        feedback("f", AT, "survey", sentiment=-0.5, text="never again"),
        "negative_sentiment",
        "medium",
    ),
    (
        feedback("f", AT, "support_ticket", status="opened", sentiment=-0.8),
        "negative_sentiment",
        "medium",
    ),
    (feedback("f", AT, "nps", score=9, sentiment=-0.6), "negative_sentiment", "medium"),
]


@pytest.mark.parametrize(
    ("event", "kind", "severity"), RULES, ids=[r[1] + "-" + r[0].type for r in RULES]
)
def test_each_intervention_rule_fires(event: InputEvent, kind: str, severity: str) -> None:
    state = regular()
    outcome = apply(state, event, AT + 60.0)
    [alert] = interventions(outcome)
    assert (alert.kind, alert.severity) == (kind, severity)
    assert alert.recommended_action == CONFIG.interventions.action(kind) != "review_customer"
    assert alert.customer_id == "c1"
    assert alert.trigger_event_id == event.event_id
    assert alert.occurred_at == event.occurred_at
    assert alert.emitted_at == dt(EMITTED)
    assert alert.alert_id == alert_id("c1", kind, event.event_id)
    assert [r.factor for r in alert.reasons] == [kind]
    assert alert.customer.churn_risk == outcome.state.churn_risk
    assert 0 < alert.customer.engagement_score < 100
    assert outcome.state.last_alert_at[kind] == AT + 60.0


@pytest.mark.parametrize(
    "event",
    [
        feedback("f", AT, "nps", score=7),
        feedback("f", AT, "csat", score=3),
        feedback("f", AT, "review", rating=3),
        feedback("f", AT, "survey", sentiment=-0.49),
        feedback("f", AT, "support_ticket", status="resolved"),
        purchase("p", AT, "order"),
        purchase("p", AT, "cancellation"),
        click("k", AT, "hologram_view"),
    ],
    ids=lambda e: e.type,
)
def test_ordinary_events_trigger_nothing(event: InputEvent) -> None:
    assert apply(regular(), event).alerts == ()


def test_bad_experience_severity_comes_from_the_config() -> None:
    config = CONFIG.model_copy(
        update={"bad_experiences": {"payment_error": "low", "tilt": "medium"}}
    )
    [alert] = interventions(apply(regular(), click("k", AT, "payment_error"), config=config))
    assert alert.severity == "low"
    [alert] = interventions(apply(regular(), click("k", AT, "tilt"), config=config))
    assert (alert.kind, alert.severity) == ("bad_experience", "medium")
    assert interventions(apply(regular(), click("k", AT, "error_page"), config=config)) == []


def test_the_per_kind_cooldown_suppresses_a_second_intervention() -> None:
    state = regular()
    first = apply(state, feedback("n1", AT, "nps", score=3))
    assert len(interventions(first)) == 1
    second = apply(first.state, feedback("n2", AT + 2 * HOUR, "nps", score=1))
    assert interventions(second) == []
    # another kind is not held back by it
    other = apply(second.state, feedback("c1", AT + 3 * HOUR, "csat", score=1))
    assert [a.kind for a in interventions(other)] == ["low_csat"]
    # and once the cooldown (1 day) is over, the kind fires again
    third = apply(other.state, feedback("n3", AT + DAY_S, "nps", score=4))
    assert [a.kind for a in interventions(third)] == ["detractor_feedback"]


def test_returns_have_no_cooldown_in_the_default_config() -> None:
    first = apply(regular(), purchase("r1", AT, "return"))
    second = apply(first.state, purchase("r2", AT + 60, "refund"))
    assert len(interventions(first)) == len(interventions(second)) == 1


def test_a_stale_trigger_gets_no_intervention() -> None:
    state = regular()
    max_age = CONFIG.interventions.max_trigger_age_days * DAY_S
    event = feedback("old", AT, "nps", score=0)
    assert interventions(apply(state, event, AT + max_age + 1)) == []
    assert len(interventions(apply(state, event, AT + max_age))) == 1
    assert interventions(apply(None, event, AT + 3 * DAY_S)) == []


# --- inactivity ---------------------------------------------------------------------------


def test_a_silent_customer_gets_an_inactivity_alert_without_any_event() -> None:
    state = regular()
    assert state.next_check_at is not None
    quiet = evaluate_due(state, state.next_check_at - 1, EMITTED, CONFIG)
    assert quiet.alerts == () and quiet.state == state
    outcome = evaluate_due(state, state.last_seen + 45 * DAY_S, EMITTED, CONFIG)
    [alert, *_] = churn_alerts(outcome.alerts)
    assert alert.trigger.source == "inactivity" and alert.trigger.event_id is None
    assert alert.level == "elevated" and alert.threshold == 0.5
    assert 0.5 <= alert.churn_risk < 0.5 + 1e-3  # found within the minute of the crossing
    assert (
        state.last_seen + 14 * DAY_S
        < alert.occurred_at.timestamp()
        < outcome.state.evaluated_at + 1
    )
    assert alert.emitted_at == dt(EMITTED)
    assert alert.reasons[0].factor == "recency"
    assert sum(r.contribution for r in alert.reasons) == pytest.approx(alert.churn_risk, abs=1e-12)
    assert outcome.state.counts == state.counts  # time passed; nothing was counted
    # the alert says what churn_risk says of the customer at the alert's time
    want = churn_risk(state, alert.occurred_at.timestamp(), CONFIG)
    assert (alert.churn_risk, alert.p_alive) == (want.churn_risk, want.p_alive)
    assert alert.reasons == list(want.reasons)


def test_inactivity_alerts_do_not_depend_on_when_the_sweeper_runs() -> None:
    state = regular()
    once = evaluate_due(state, T0 + 200 * DAY_S, EMITTED, CONFIG)
    stepwise: list[Alert] = []
    s = state
    for day in range(10, 201, 3):
        outcome = evaluate_due(s, T0 + day * DAY_S, EMITTED, CONFIG)
        s, stepwise = outcome.state, stepwise + list(outcome.alerts)
    assert [a.level for a in churn_alerts(once.alerts)] == ["elevated", "high"]
    assert list(once.alerts) == stepwise
    assert s == once.state


def test_a_sweep_leaves_the_state_it_was_given_as_it_was() -> None:
    """sweep_due completes the copies it makes itself (the evaluation's, then the pruned
    duplicate window), never the state it was given."""
    state = settle(regular(), CONFIG)  # exact: its first check evaluates it, not a copy
    assert state.check_exact
    fields = {name: getattr(state, name) for name in state.__slots__}
    outcome, checked = sweep_due(state, T0 + 200 * DAY_S, EMITTED, CONFIG)
    assert checked and outcome.alerts
    assert outcome.state.recent_events == {} and state.recent_events  # pruned, in the copy
    assert {name: getattr(state, name) for name in state.__slots__} == fields
    assert all(getattr(state, name) is value for name, value in fields.items())


def test_apply_event_runs_due_inactivity_checks_first() -> None:
    state = regular()
    comeback = click("back", T0 + 60 * DAY_S, "order")
    outcome = apply(state, comeback)
    churn = churn_alerts(outcome.alerts)
    assert [a.trigger.source for a in churn][:1] == ["inactivity"]
    assert churn[0].occurred_at < comeback.occurred_at
    # the same alerts as if the sweeper had reached the customer first
    swept = evaluate_due(state, comeback.occurred_at.timestamp(), EMITTED, CONFIG)
    assert list(outcome.alerts[: len(swept.alerts)]) == list(swept.alerts)
    assert outcome.state.counts["events"] == state.counts["events"] + 1
    assert outcome.state.last_seen == comeback.occurred_at.timestamp()


def test_a_late_event_is_judged_at_the_scorer_clock() -> None:
    event = click("late", T0)
    outcome = apply(None, event, T0 + 40 * DAY_S)
    [alert] = churn_alerts(outcome.alerts)
    assert alert.trigger.source == "event" and alert.trigger.event_id == "late"
    assert alert.occurred_at == event.occurred_at
    assert outcome.state.evaluated_at == T0 + 40 * DAY_S


def test_checks_until_bounds_the_inactivity_checks_run_first() -> None:
    state = regular()
    comeback = click("back", T0 + 60 * DAY_S, "order")
    now = comeback.occurred_at.timestamp()
    held = apply_event(state, comeback, now, EMITTED, CONFIG, checks_until=state.last_seen + DAY_S)
    assert churn_alerts(held.alerts) == []
    assert held.state.counts["events"] == state.counts["events"] + 1
    unbounded = apply_event(state, comeback, now, EMITTED, CONFIG, checks_until=now + DAY_S)
    assert unbounded == apply(state, comeback)


def test_an_intervention_completes_the_events_own_state_as_a_copy_would() -> None:
    """apply_event lets _intervene set last_alert_at on the state the event just made
    (fresh) instead of copying it: the same state and alert as the copying path, and a
    state anyone else holds is never changed."""
    held = regular(3)
    event = feedback("nps-fresh", T0 + 3 * DAY_S, "nps", score=1)
    at = event.occurred_at.timestamp()
    copied, alert = _intervene(held, event, at, at, EMITTED, CONFIG)
    assert held.last_alert_at == {} and copied is not held
    fresh = held.evolve()
    completed, same_alert = _intervene(fresh, event, at, at, EMITTED, CONFIG, fresh=True)
    assert completed is fresh
    assert completed == copied and same_alert == alert
    assert completed.last_alert_at == {"detractor_feedback": at}
    # and the whole event, through apply_event, gives that state and that alert
    outcome = apply(held, event)
    assert interventions(outcome) == [alert]
    assert outcome.state.last_alert_at["detractor_feedback"] == at
