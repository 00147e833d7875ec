"""The sweeper's fast paths give what the definitions give, bit for bit.

scoring.schedule re-evaluates the rising churn terms with the per-customer constants
read once; any difference in a single floating-point operation would move some check by
a bisection step and change which inactivity alerts fire when. Compared on simulated
customers at every step of their history and on arbitrary states, without a BG/NBD fit
(recency takes p_alive's weight) and with one (p_alive in the loop). And a customer the
sweep only settles differs in its check time alone, so its stored blob can be patched
(scoring.codec.with_exact_check) instead of encoded again.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache

from churn_states import churn_states
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.codec import encode, with_exact_check
from scoring.config import ScoringConfig, load_config, load_profile
from scoring.engine import apply_event, evaluate_due, sweep_due
from scoring.model import BgNbdParams, ModelParams
from scoring.schedule import exact_check_at, settle_stored, settled_check_at
from scoring.scores import rising_terms
from scoring.state import DAY_S, CustomerState
from scoring.stored import check_inputs
from scoring.thresholds import next_check_at
from streams.dev.simulator import generate

RETAIL = load_config(None)
FITTED = RETAIL.with_model(ModelParams(bgnbd=BgNbdParams(r=0.25, alpha=4.0, a=0.8, b=2.4)))
CONFIGS = {"retail": RETAIL, "fitted": FITTED, "gaming": load_profile("gaming")}
START = datetime(2026, 3, 2, tzinfo=UTC)
MODELS: dict[str, type[InputEvent]] = {
    "clickstream": ClickstreamEvent,
    "purchases": PurchaseEvent,
    "feedback": FeedbackEvent,
}


def same(a: float | None, b: float | None) -> bool:
    """Equal to the bit (0.0 and -0.0 differ, NaN equals NaN)."""
    if a is None or b is None:
        return a is b
    return math.copysign(1.0, a) == math.copysign(1.0, b) and (a == b or (a != a and b != b))


@cache
def history_states(config_name: str) -> tuple[CustomerState, ...]:
    """Every intermediate state of 40 simulated customers over 120 days."""
    config = CONFIGS[config_name]
    by_customer: dict[str, list[InputEvent]] = defaultdict(list)
    for e in generate(40, 120, 7, START):
        by_customer[e.customer_id].append(MODELS[e.source].model_validate(e.payload))
    out = []
    for events in by_customer.values():
        state: CustomerState | None = None
        for event in sorted(events, key=lambda e: e.occurred_at):
            t = event.occurred_at.timestamp()
            state = apply_event(state, event, t, t, config).state
            out.append(state)
    return tuple(out)


def test_simulated_customers_get_the_same_check_times() -> None:
    for name, config in CONFIGS.items():
        outcomes = set()
        for state in history_states(name):
            for silence_days in (0.0, 3.0, 20.0, 90.0):
                at = state.evaluated_at + silence_days * DAY_S
                for level in (0, 1, 2):
                    s = replace(state, churn_level=level)
                    expected = next_check_at(s, at, config)
                    assert same(exact_check_at(s, at, config), expected), (name, s, at)
                    if expected is not None:
                        latest = at + config.churn.thresholds.max_check_interval_days * DAY_S
                        outcomes.add("latest" if expected == latest else "found")
        # guards against vacuity: both the bisection and the no-crossing branch ran
        assert outcomes == {"latest", "found"}, name


def test_the_rising_terms_are_the_same_floats() -> None:
    """Stricter than the check times, which the bisection rounds to the minute."""
    evaluated = 0
    for name, config in CONFIGS.items():
        for state in history_states(name):
            for days in (0.0, 20.0):
                at = state.evaluated_at + days * DAY_S
                trace: list[tuple[float, float]] = []
                exact_check_at(state, at, config, trace)
                for when, value in trace:
                    assert same(value, rising_terms(state, when, config)), (name, state, when)
                evaluated += len(trace)
    # p_alive is in the loop only for repeat buyers under a fit: the simulation has them
    assert any(s.purchase_days >= 2 for s in history_states("fitted"))
    assert evaluated > 10_000


@settings(max_examples=300, deadline=None)
@given(case=churn_states(CONFIGS, START.timestamp(), purchase_span_from=-3, resolved_tickets=False))
def test_arbitrary_states_get_the_same_check_times(
    case: tuple[ScoringConfig, float, CustomerState],
) -> None:
    config, at, state = case
    try:
        expected = next_check_at(state, at, config)
    except ValueError as exc:  # BG/NBD refuses a last purchase before the first
        try:
            exact_check_at(state, at, config)
        except ValueError as fast:
            assert str(fast) == str(exc)
            return
        raise AssertionError("the fast path accepted what the model refuses") from exc
    assert same(exact_check_at(state, at, config), expected)


def test_a_settled_customer_differs_only_in_its_check_time() -> None:
    """What the sweeper relies on to patch the stored blob and skip the KPI deltas."""
    seen = set()
    for state in history_states("retail"):
        for days in (1.0, 10.0, 40.0):
            now = state.evaluated_at + days * DAY_S
            outcome, checked = sweep_due(state, now, now, RETAIL)
            assert outcome == evaluate_due(state, now, now, RETAIL)
            seen.add(checked)
            if checked:
                continue
            after = outcome.state
            assert outcome.alerts == ()
            assert after == replace(
                state, next_check_at=after.next_check_at, check_exact=after.check_exact
            )
            patched = with_exact_check(encode(state), after.next_check_at)
            if after is not state:
                assert patched == encode(after)
    assert seen == {True, False}


def test_the_patched_blob_is_the_encoded_state() -> None:
    for state in history_states("fitted")[::7]:
        for check in (None, state.evaluated_at + 3_600.0, 1_900_000_000.0):
            expected = encode(replace(state, next_check_at=check, check_exact=True))
            assert with_exact_check(encode(state), check) == expected
    assert with_exact_check(b'{"c": "old json form"}', 1.0) is None


def refused(state: CustomerState, config: ScoringConfig) -> bool:
    """BG/NBD applies to the customer and refuses their purchases (t_x < 0)."""
    return (
        config.model.bgnbd is not None
        and state.purchase_days > 1
        and state.first_purchase_day >= 0
        and not state.last_purchase_day >= state.first_purchase_day
    )


def settled_from_the_blob(state: CustomerState, config: ScoringConfig) -> float | None:
    inputs = check_inputs(encode(state))
    assert inputs is not None
    return settled_check_at(inputs, config)


def test_settling_from_the_stored_fields_is_settling_the_state() -> None:
    """The sweeper's settling, from the fields of the stored blob alone, gives the time
    engine.settle gives (exact_check_at at the last evaluation), bit for bit."""
    outcomes = set()
    for name, config in CONFIGS.items():
        for state in history_states(name)[::2]:
            for level in (0, 1, 2):
                s = replace(state, churn_level=level, check_exact=False)
                expected = exact_check_at(s, s.evaluated_at, config)
                assert same(settled_from_the_blob(s, config), expected), (name, s)
                outcomes.add(expected is None)
    assert outcomes == {True, False}


@settings(max_examples=300, deadline=None)
@given(case=churn_states(CONFIGS, START.timestamp(), purchase_span_from=-3))
def test_arbitrary_states_settle_the_same_from_their_blob(
    case: tuple[ScoringConfig, float, CustomerState],
) -> None:
    config, _, state = case
    settled = settled_from_the_blob(state, config)
    if state.churn_level < 2 and refused(state, config):
        # the model refuses the purchases: NaN, the sweeper settles the decoded state
        assert settled is not None and math.isnan(settled)
        return
    assert same(settled, exact_check_at(state, state.evaluated_at, config))


def settled_one_by_one(
    blobs: dict[str, bytes], now: float, config: ScoringConfig
) -> tuple[dict[str, tuple[bytes, float | None]], dict[str, float | None]]:
    """The definition of settle_stored: check_inputs, settled_check_at and
    with_exact_check, customer by customer, as the sweeper called them before."""
    settled: dict[str, tuple[bytes, float | None]] = {}
    rest: dict[str, float | None] = {}
    for customer_id, raw in blobs.items():
        exact: float | None = math.nan
        inputs = check_inputs(raw)
        due = None if inputs is None else inputs.next_check_at
        if inputs is not None and not inputs.check_exact and due is not None and due <= now:
            exact = settled_check_at(inputs, config)
            if exact is None or exact > now:
                patched = with_exact_check(raw, exact)
                assert patched is not None
                settled[customer_id] = (patched, exact)
                continue
        rest[customer_id] = exact
    return settled, rest


def assert_settled_alike(blobs: dict[str, bytes], now: float, config: ScoringConfig) -> None:
    got_settled, got_rest = settle_stored(blobs, now, config)
    want_settled, want_rest = settled_one_by_one(blobs, now, config)
    assert list(got_settled) == list(want_settled)
    assert list(got_rest) == list(want_rest)  # in the order of the blobs
    for c, (blob, check) in got_settled.items():
        assert blob == want_settled[c][0] and same(check, want_settled[c][1]), c
    for c, check in got_rest.items():
        assert same(check, want_rest[c]), c


@settings(max_examples=300, deadline=None)
@given(
    case=churn_states(CONFIGS, START.timestamp(), purchase_span_from=-3),
    data=st.data(),
)
def test_a_shard_settles_as_its_customers_do_one_by_one(
    case: tuple[ScoringConfig, float, CustomerState], data: st.DataObject
) -> None:
    """settle_stored, one compiled loop over a shard's blobs, against the definition:
    lower bounds due or not, exact check times, none scheduled, and blobs it does not
    read (the JSON form, extras, truncated)."""
    config, at, state = case
    offsets = st.floats(-40 * DAY_S, 40 * DAY_S)
    check = data.draw(st.one_of(st.none(), offsets.map(lambda d: at + d)))
    lower_bound = replace(state, next_check_at=check, check_exact=data.draw(st.booleans()))
    raw = encode(lower_bound)
    blobs = {
        "stored": raw,
        "exact": encode(replace(lower_bound, customer_id="exact", check_exact=True)),
        "extras": encode(replace(lower_bound, customer_id="extras", counts={"old": 1})),
        "json": b'{"c": "json"}',
        "truncated": raw[:-1],
    }
    assert_settled_alike(blobs, at + data.draw(offsets), config)


def test_settling_a_shard_is_not_vacuous() -> None:
    """Every way a customer leaves settle_stored, on simulated customers."""
    config = CONFIGS["fitted"]
    states = history_states("fitted")[::5]
    blobs = {
        f"{i}": encode(replace(s, customer_id=f"{i}", check_exact=i % 4 == 0))
        for i, s in enumerate(states)
        if s.next_check_at is not None
    }
    kinds = set()
    for days in (0.0, 2.0, 10.0, 40.0):
        now = max(s.evaluated_at for s in states) + days * DAY_S
        assert_settled_alike(blobs, now, config)
        settled, rest = settle_stored(blobs, now, config)
        kinds.add("settled" if settled else "none settled")
        kinds.update("due" if t == t else "left" for t in rest.values())
    assert {"settled", "due", "left"} <= kinds
