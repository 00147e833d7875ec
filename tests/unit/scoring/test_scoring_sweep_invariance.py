"""The sweeper's extra inactivity evaluations change nothing.

On the event clock the worker's sweeper runs ``evaluate_due`` at its shard's watermark
whenever its timer fires, which is never past the customer's next unapplied event. The
worker's results equal the offline fold (tests/chaos/workload.py ``ground_truth``) only if
such evaluations, at any times up to the next event, leave the final state and alerts as
the plain fold of ``apply_event`` would.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.config import load_config
from scoring.engine import Alert, apply_event, evaluate_due
from scoring.state import DAY_S, CustomerState
from streams.dev.simulator import generate

CONFIG = load_config(None)
START = datetime(2026, 3, 2, tzinfo=UTC)
EMITTED_AT = START.timestamp() + 10_000_000.0
MODELS: dict[str, type[InputEvent]] = {
    "clickstream": ClickstreamEvent,
    "purchases": PurchaseEvent,
    "feedback": FeedbackEvent,
}


@cache
def histories(seed: int) -> tuple[tuple[InputEvent, ...], ...]:
    """Each simulated customer's events in time order (long enough for silences to
    raise churn alerts)."""
    by_customer: dict[str, list[InputEvent]] = defaultdict(list)
    for e in generate(12, 120, seed, START):
        by_customer[e.customer_id].append(MODELS[e.source].model_validate(e.payload))
    return tuple(
        tuple(sorted(events, key=lambda e: e.occurred_at)) for events in by_customer.values()
    )


def with_silences(
    events: tuple[InputEvent, ...], silences: dict[int, float]
) -> tuple[InputEvent, ...]:
    """``events`` with each event from index ``i`` on moved ``silences[i]`` days later."""
    shifted, delay = [], 0.0
    for i, event in enumerate(events):
        delay += silences.get(i, 0.0) * DAY_S
        at = event.occurred_at + timedelta(seconds=delay)
        shifted.append(event.model_copy(update={"occurred_at": at}))
    return tuple(shifted)


def fold(
    events: tuple[InputEvent, ...], sweeps: dict[int, list[float]], end: float
) -> tuple[CustomerState, list[Alert]]:
    """``apply_event`` at each event's time; before event ``i``, ``evaluate_due`` at each
    fraction in ``sweeps[i]`` of the way from the previous event's time to event ``i``'s."""
    state: CustomerState | None = None
    alerts: list[Alert] = []
    previous = events[0].occurred_at.timestamp()
    for i, event in enumerate(events):
        t = event.occurred_at.timestamp()
        for fraction in sorted(sweeps.get(i, [])):
            assert state is not None
            due = evaluate_due(state, previous + fraction * (t - previous), EMITTED_AT, CONFIG)
            state, alerts = due.state, [*alerts, *due.alerts]
        outcome = apply_event(state, event, t, EMITTED_AT, CONFIG)
        state, alerts = outcome.state, [*alerts, *outcome.alerts]
        previous = t
    assert state is not None
    due = evaluate_due(state, end, EMITTED_AT, CONFIG)
    return due.state, [*alerts, *due.alerts]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2))
def test_sweeps_up_to_the_next_event_leave_state_and_alerts_unchanged(
    data: st.DataObject, seed: int
) -> None:
    customers = histories(seed)
    events = data.draw(st.sampled_from(customers), label="customer")
    # Silences of up to four months before some events: the customer drifts into churn
    # risk and comes back, so inactivity checks (and alerts) fall between events.
    silences = data.draw(
        st.dictionaries(st.integers(0, len(events) - 1), st.floats(0, 120), max_size=3),
        label="silences (days)",
    )
    events = with_silences(events, silences)
    end = events[-1].occurred_at.timestamp() + data.draw(st.floats(0, 90 * DAY_S))
    fractions = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3)
    sweeps = data.draw(
        st.dictionaries(st.integers(1, len(events) - 1), fractions)
        if len(events) > 1
        else st.just({}),
        label="sweeps",
    )

    plain_state, plain_alerts = fold(events, {}, end)
    swept_state, swept_alerts = fold(events, sweeps, end)

    assert swept_state == plain_state
    # The same alerts, each once (the worker's outbox is keyed by alert id).
    assert {a.alert_id: a for a in swept_alerts} == {a.alert_id: a for a in plain_alerts}
    assert len(swept_alerts) == len(plain_alerts)


def test_the_histories_have_churn_alerts_for_the_sweeps_to_disturb() -> None:
    """Guards the property above against vacuity: the simulated silences do alert."""
    alerted = 0
    for events in histories(0):
        _, alerts = fold(events, {}, events[-1].occurred_at.timestamp() + 60 * DAY_S)
        alerted += any(a.kind == "churn_risk" for a in alerts)
    assert alerted > 0
