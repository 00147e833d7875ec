"""Apply one event, or the passing of time, to a customer's state and decide alerts.

Pure: the caller passes the scorer clock (``now``) and the wall time the alerts are
stamped with (``emitted_at``). Given the same state and inputs, the result, alert ids
included, is always the same.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from schemas.alerts import (
    ChurnRiskAlert,
    CustomerSnapshot,
    InterventionAlert,
    InterventionKind,
    Reason,
    Trigger,
)
from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.config import ScoringConfig, Severity
from scoring.features import fold
from scoring.schedule import exact_check_at
from scoring.scores import (
    LEVEL_NAMES,
    alive_probability,
    churn_reasons,
    churn_terms,
    engagement_score,
)
from scoring.state import DAY_S, CustomerState, completer, event_digest, evolver, slot_init
from scoring.thresholds import decide_churn, earliest_check_at, threshold_of
from scoring.value import customer_clv, moved_up, tier_of, tier_reasons

Alert = ChurnRiskAlert | InterventionAlert
# What an evaluation sets, in the order ``_evaluate_churn`` passes them.
_EVALUATED = (
    "churn_risk",
    "churn_level",
    "churn_alerts",
    "last_alert_at",
    "evaluated_at",
    "tier",
    "clv",
    "next_check_at",
    "check_exact",
)
_complete_evaluation = completer(*_EVALUATED)
# The copy an evaluation of a stored state makes (the sweep's, and a check run before an
# event): straight-line, not ``evolve``'s keyword call, which cost more than the
# evaluation's scores in a profile.
_evolve_evaluation = evolver(*_EVALUATED)
_complete_alerted = completer("last_alert_at")
_complete_recent = completer("recent_events")
_evolve_settled = evolver("next_check_at", "check_exact")
# Every inactivity alert's trigger: a frozen model, made once (the sweep makes thousands).
_INACTIVITY = Trigger(source="inactivity", event_id=None)


@slot_init  # one per event
@dataclass(frozen=True, slots=True)
class Outcome:
    state: CustomerState
    alerts: tuple[Alert, ...] = ()
    duplicate: bool = False


def alert_id(*parts: str) -> str:
    """Deterministic: a redelivered or replayed trigger yields the same id."""
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


# Every alert of a sweep or a batch is stamped with the same wall time: its datetime is
# made once, not once per alert (datetimes are immutable).
_emitted_dt = lru_cache(maxsize=8)(_dt)


def evaluate_due(
    state: CustomerState, now: float, emitted_at: float, config: ScoringConfig
) -> Outcome:
    """Run every inactivity check that fell due up to ``now``, each at its own due time."""
    return sweep_due(state, now, emitted_at, config)[0]


def sweep_due(
    state: CustomerState, now: float, emitted_at: float, config: ScoringConfig
) -> tuple[Outcome, bool]:
    """``evaluate_due``, and whether a check ran. When none did, the state differs from
    the given one at most in ``next_check_at`` and ``check_exact``: the sweeper settles
    most due customers that way, and then needs neither to encode the state again nor to
    count it in the KPIs."""
    alerts: list[Alert] = []
    checked = None
    while (due := state.next_check_at) is not None and due <= now:
        if not state.check_exact:
            state = settle(state, config)  # the cheap bound was reached: find the real time
            continue
        state, alert = _evaluate_churn(state, due, None, due, emitted_at, config, True)
        checked = due
        if alert is not None:
            alerts.append(alert)
    if checked is not None and state.recent_events:
        # A silent customer's duplicate window has passed: keep the stored state small.
        horizon = checked - config.dedup.window_s
        recent = {d: seen for d, seen in state.recent_events.items() if seen >= horizon}
        if len(recent) != len(state.recent_events):
            # A check ran: ``state`` is the copy its evaluation made, which nothing else
            # refers to yet, so it is completed rather than copied again.
            state = _complete_recent(state, recent)
    return Outcome(state=state, alerts=tuple(alerts)), checked is not None


def settle(state: CustomerState, config: ScoringConfig) -> CustomerState:
    """The state with its exact next check time, computed from the last evaluation."""
    if state.check_exact:
        return state
    return with_exact_check_at(state, exact_check_at(state, state.evaluated_at, config))


def with_exact_check_at(state: CustomerState, exact: float | None) -> CustomerState:
    """``state.evolve(next_check_at=exact, check_exact=True)``, without the keyword call
    (the sweeper settles thousands of states a second)."""
    return _evolve_settled(state, exact, True, None)


def apply_event(
    state: CustomerState | None,
    event: InputEvent,
    now: float,
    emitted_at: float,
    config: ScoringConfig,
    checks_until: float | None = None,
    event_time: float | None = None,
) -> Outcome:
    """Fold one event into the state (once per event_id within the dedup window).

    ``checks_until`` bounds the inactivity checks run first: on the event clock, only up
    to the time all of the customer's partitions have been read to (the watermark), so a
    check never runs before an earlier event still waiting in a slower topic.
    ``event_time``: ``event.occurred_at.timestamp()``, when the caller has it already.
    """
    t_event = event.occurred_at.timestamp() if event_time is None else event_time
    alerts: list[Alert] = []
    if state is None:
        state = CustomerState.new(event.customer_id, t_event)
    else:
        # Checks that fell due before this event are run first, so an inactivity alert
        # does not depend on whether the sweeper reached the customer before the event.
        until = now if checks_until is None else min(now, checks_until)
        due_at = state.next_check_at
        if due_at is not None and due_at <= until:
            due = evaluate_due(state, until, emitted_at, config)
            state, alerts = due.state, list(due.alerts)

    digest = event_digest(event.event_id)
    horizon = now - config.dedup.window_s
    seen_at = state.recent_events
    if not seen_at or min(seen_at.values()) >= horizon:
        recent = dict(seen_at)  # the common case: nothing left the window
    else:
        recent = {d: seen for d, seen in seen_at.items() if seen >= horizon}
    if digest in recent:
        return Outcome(
            state=state.evolve(recent_events=recent), alerts=tuple(alerts), duplicate=True
        )
    # Whole seconds: exact in the compact encoding, and a second is nothing to the window.
    recent[digest] = float(math.floor(now))

    tier_before = state.tier
    state = fold(state, event, t_event, recent, config)
    # A late event is judged at the customer's latest known time, not back in the past.
    at = max(now, state.last_seen)
    purchase = isinstance(event, PurchaseEvent) and event.type == "order"
    # ``fold`` made a new state: the evaluation completes it rather than copy it again.
    state, churn_alert = _evaluate_churn(
        state, at, event.event_id, t_event, emitted_at, config, purchase or not tier_before, True
    )
    if churn_alert is not None:
        alerts.append(churn_alert)
    # Freshness and cooldown are judged on the scorer clock (on the event clock: the event's
    # own time), so they do not depend on what other topics have been read so far.
    state, intervention = _intervene(
        state, event, t_event, max(now, t_event), emitted_at, config, fresh=True
    )
    if intervention is not None:
        alerts.append(intervention)
    if state.tier == "champion" and moved_up(tier_before, state.tier):
        state, milestone = _milestone(state, event, tier_before, at, emitted_at, config)
        if milestone is not None:
            alerts.append(milestone)
    return Outcome(state, tuple(alerts))


def _evaluate_churn(
    state: CustomerState,
    at: float,
    event_id: str | None,
    occurred_at: float,
    emitted_at: float,
    config: ScoringConfig,
    revalue: bool = False,
    fresh: bool = False,
) -> tuple[CustomerState, ChurnRiskAlert | None]:
    """Churn risk, level and schedule, and the tier, at ``at``; CLV too when ``revalue``
    (purchases and inactivity checks: hyp2f1 is too dear for every click). The trigger is
    the event ``event_id``, or inactivity when None. One copy of the state, none when it
    is ``fresh`` (just made by the caller, see ``state.completer``); the churn terms are
    computed once, for the risk and the schedule; the reasons only for an alert."""
    thresholds = config.churn.thresholds
    terms = churn_terms(state, at, config)
    risk = terms.risk
    decision = decide_churn(
        state.churn_level,
        risk,
        state.last_alert_at.get("churn_risk"),
        at,
        thresholds,
    )
    alert = None
    last_alert_at = state.last_alert_at
    churn_alerts = state.churn_alerts
    tier = tier_of(state, at, config)
    clv = customer_clv(state, at, config)[0] if revalue else state.clv
    if decision.alert_level is not None:
        churn_alerts += 1
        last_alert_at = {**last_alert_at, "churn_risk": at}
        churn_risk, reasons = churn_reasons(state, at, config, terms)
        # One validation, the reasons' with the alert's (see churn_reasons)
        alert = ChurnRiskAlert.model_validate(
            {
                "alert_id": alert_id(state.customer_id, "churn_risk", str(churn_alerts)),
                "customer_id": state.customer_id,
                "level": "high" if decision.alert_level == 2 else "elevated",
                "churn_risk": churn_risk,
                "previous_churn_risk": state.churn_risk,
                "threshold": threshold_of(decision.alert_level, thresholds),
                "engagement_score": engagement_score(state, at, config),
                "reasons": [{"factor": f, "detail": d, "contribution": c} for f, d, c in reasons],
                "trigger": _INACTIVITY
                if event_id is None
                else Trigger(source="event", event_id=event_id),
                "occurred_at": _dt(occurred_at),
                "emitted_at": _emitted_dt(emitted_at),
                "p_alive": terms.p_alive,
                "tier": tier,
                "clv": clv,
            }
        )
    # Only a lower bound here (closed form); ``settle`` finds the exact time when needed.
    check = earliest_check_at(
        state, at, config, decision.armed_level, last_alert_at.get("churn_risk"), terms
    )
    values = (risk, decision.armed_level, churn_alerts, last_alert_at, at, tier, clv, check)
    if fresh:
        return _complete_evaluation(state, *values, check is None), alert
    return _evolve_evaluation(state, *values, check is None, None), alert


def _snapshot(state: CustomerState, at: float, config: ScoringConfig) -> CustomerSnapshot:
    return CustomerSnapshot(
        engagement_score=engagement_score(state, at, config),
        churn_risk=state.churn_risk,
        p_alive=alive_probability(state, at, config),
        tier=state.tier or None,
        clv=state.clv,
    )


def _milestone(
    state: CustomerState,
    event: InputEvent,
    tier_before: str,
    at: float,
    emitted_at: float,
    config: ScoringConfig,
) -> tuple[CustomerState, InterventionAlert | None]:
    """A customer moving up into champion: a moment to reward (kind loyalty_milestone)."""
    kind: InterventionKind = "loyalty_milestone"
    last = state.last_alert_at.get(kind)
    if last is not None and at - last < config.interventions.cooldown_s(kind):
        return state, None
    reasons = [
        Reason(
            factor="tier",
            detail=f"moved up from {tier_before} to {state.tier}",
            contribution=1.0,
        ),
        *tier_reasons(state, at),
    ]
    alert = InterventionAlert(
        alert_id=alert_id(state.customer_id, kind, event.event_id),
        customer_id=state.customer_id,
        kind=kind,
        severity="low",
        recommended_action=config.interventions.action(kind),
        trigger_event_id=event.event_id,
        occurred_at=event.occurred_at,
        emitted_at=_emitted_dt(emitted_at),
        customer=_snapshot(state, at, config),
        reasons=reasons,
    )
    return state.evolve(last_alert_at={**state.last_alert_at, kind: at}), alert


def _trigger(
    event: InputEvent, config: ScoringConfig
) -> tuple[InterventionKind, Severity, str] | None:
    rules = config.interventions.rules
    if isinstance(event, FeedbackEvent):
        if (
            event.type == "nps"
            and event.score is not None
            and event.score <= rules.detractor_max_nps
        ):
            severity: Severity = "high" if event.score <= 3 else "medium"
            return "detractor_feedback", severity, f"NPS answer {event.score} (detractor)"
        if event.type == "csat" and event.score is not None and event.score <= rules.low_csat_max:
            return "low_csat", "medium", f"CSAT answer {event.score} of 5"
        rating = event.rating
        if (
            event.type == "review"
            and rating is not None
            and rating <= rules.negative_review_max_rating
        ):
            return "negative_review", "medium", f"review rated {event.rating} of 5"
        if event.sentiment is not None and event.sentiment <= rules.negative_sentiment_max:
            return "negative_sentiment", "medium", f"{event.type} sentiment {event.sentiment:+.2f}"
    elif isinstance(event, PurchaseEvent) and event.type in ("return", "refund"):
        detail = f"{event.type} on order {event.order_id} ({event.amount} {event.currency})"
        return "product_return", "low", detail
    elif isinstance(event, ClickstreamEvent) and event.type in config.bad_experiences:
        where = f" on {event.page}" if event.page else ""
        return "bad_experience", config.bad_experiences[event.type], f"{event.type}{where}"
    return None


def _intervene(
    state: CustomerState,
    event: InputEvent,
    t_event: float,
    at: float,
    emitted_at: float,
    config: ScoringConfig,
    fresh: bool = False,
) -> tuple[CustomerState, InterventionAlert | None]:
    """The intervention ``event`` calls for, if any, and the state that remembers it; a
    ``fresh`` state (``state.completer``: this event's own) is completed, not copied."""
    found = _trigger(event, config)
    if found is None:
        return state, None
    kind, severity, detail = found
    if at - t_event > config.interventions.max_trigger_age_days * DAY_S:
        return state, None  # too late to be worth acting on
    last = state.last_alert_at.get(kind)
    if last is not None and at - last < config.interventions.cooldown_s(kind):
        return state, None
    alert = InterventionAlert(
        alert_id=alert_id(state.customer_id, kind, event.event_id),
        customer_id=state.customer_id,
        kind=kind,
        severity=severity,
        recommended_action=config.interventions.action(kind),
        trigger_event_id=event.event_id,
        occurred_at=event.occurred_at,
        emitted_at=_emitted_dt(emitted_at),
        customer=_snapshot(state, at, config),
        reasons=[Reason(factor=kind, detail=detail, contribution=1.0)],
    )
    alerted = {**state.last_alert_at, kind: at}
    if fresh:
        return _complete_alerted(state, alerted), alert
    return state.evolve(last_alert_at=alerted), alert


__all__ = [
    "LEVEL_NAMES",
    "Alert",
    "Outcome",
    "alert_id",
    "apply_event",
    "evaluate_due",
    "settle",
    "sweep_due",
    "with_exact_check_at",
]
