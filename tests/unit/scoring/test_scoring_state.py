"""CustomerState: exact time decay, order independence, serialization, landmark rebase."""

from __future__ import annotations

import hashlib
import math
from dataclasses import FrozenInstanceError, dataclass, fields, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring import codec
from scoring.config import ScoringConfig, load_config
from scoring.engine import apply_event, evaluate_due
from scoring.features import contributed, with_contributions
from scoring.names import ACTIVITY_SHORT
from scoring.scores import half_lives
from scoring.state import (
    DAY_S,
    REBASE_EXPONENT,
    CustomerState,
    _Draft,
    build_state,
    completer,
    day_floor,
    event_digest,
    evolver,
    slot_init,
)

CONFIG = load_config()
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC).timestamp()
YEAR_S = 365 * DAY_S


def isclose(a: float, b: float, rel: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


# --- decay --------------------------------------------------------------------------------


def test_a_contribution_halves_after_one_half_life() -> None:
    h = 3.5 * DAY_S
    t = T0 + 12_345.6
    state = with_contributions(CustomerState.new("c", T0), {"x": 3.0}, t, {"x": h})
    assert isclose(state.value("x", h, t), 3.0, 1e-12)
    assert isclose(state.value("x", h, t + h), 1.5, 1e-12)
    assert isclose(state.value("x", h, t + 2 * h), 0.75, 1e-12)
    assert isclose(state.value("x", h, t + 10 * h), 3.0 / 1024, 1e-12)


def test_an_unknown_feature_is_zero() -> None:
    assert CustomerState.new("c", T0).value("nothing", DAY_S, T0 + 5) == 0.0


def test_zero_weights_add_no_feature() -> None:
    state = with_contributions(CustomerState.new("c", T0), {"x": 0.0}, T0, {"x": DAY_S})
    assert state.decayed == {}


def test_value_is_the_sum_of_independently_decayed_contributions() -> None:
    hl = {"a": 2 * DAY_S, "b": 45 * DAY_S}
    contributions = [(T0 + 3_600, 1.0), (T0 + 9 * DAY_S, 2.5), (T0 - 4 * DAY_S, 0.7)]
    contributions += [(T0 + 40 * DAY_S + 17.25, 10.0)]
    state = CustomerState.new("c", T0)
    for t, w in contributions:
        state = with_contributions(state, {"a": w, "b": 2 * w}, t, hl)
    for at in (T0 + 40 * DAY_S + 17.25, T0 + 41 * DAY_S, T0 + 100 * DAY_S):
        for name, scale in (("a", 1.0), ("b", 2.0)):
            expected = sum(scale * w * 2 ** (-(at - t) / hl[name]) for t, w in contributions)
            assert isclose(state.value(name, hl[name], at), expected, 1e-12)


# --- order independence through the engine ---------------------------------------------

CLICK_TYPES = ["page_view", "product_view", "add_to_cart", "hologram_view"]
BAD_TYPES = sorted(CONFIG.bad_experiences)
ZONES = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7, minutes=-30))]


@st.composite
def an_event(draw: st.DrawFn, index: int) -> InputEvent:
    offset = draw(st.integers(0, int(YEAR_S)))
    micros = draw(st.sampled_from([0, 250_000, 999_999]))
    when = datetime.fromtimestamp(T0 + offset, tz=UTC) + timedelta(microseconds=micros)
    when = when.astimezone(draw(st.sampled_from(ZONES)))
    base = {"event_id": f"ev-{index}", "customer_id": "cust", "occurred_at": when}
    family = draw(st.sampled_from(["click", "bad", "purchase", "feedback"]))
    if family == "click":
        return ClickstreamEvent(**base, type=draw(st.sampled_from(CLICK_TYPES)))
    if family == "bad":
        return ClickstreamEvent(**base, type=draw(st.sampled_from(BAD_TYPES)), page="/checkout")
    if family == "purchase":
        kind = draw(st.sampled_from(["order", "return", "refund", "cancellation"]))
        return PurchaseEvent.model_validate(
            {**base, "type": kind, "order_id": f"o-{index}", "amount": "12.50", "currency": "EUR"}
        )
    return FeedbackEvent(**base, type="nps", score=draw(st.integers(0, 10)))


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[InputEvent], list[InputEvent]]:
    """Up to ~40 events (some redelivered with the same event_id) and a reordering."""
    n = draw(st.integers(1, 30))
    events = [draw(an_event(i)) for i in range(n)]
    redelivered = draw(st.lists(st.sampled_from(events), max_size=10))
    everything = events + redelivered
    return everything, draw(st.permutations(everything))


def fold(events: list[InputEvent], now: float, config: ScoringConfig) -> tuple[CustomerState, int]:
    state: CustomerState | None = None
    duplicates = 0
    for event in events:
        outcome = apply_event(state, event, now, now, config)
        state, duplicates = outcome.state, duplicates + outcome.duplicate
    assert state is not None
    return state, duplicates


@settings(max_examples=60, deadline=None)
@given(histories())
def test_any_order_of_the_same_events_gives_the_same_state(
    orders: tuple[list[InputEvent], list[InputEvent]],
) -> None:
    original, permuted = orders
    # One clock for every call, so nothing depends on the order but the order itself.
    now = max(e.occurred_at.timestamp() for e in original) + 3 * 3_600.0
    a, dup_a = fold(original, now, CONFIG)
    b, dup_b = fold(permuted, now, CONFIG)

    assert dup_a == dup_b == len(original) - len({e.event_id for e in original})
    assert a.counts == b.counts
    purchases = (a.first_purchase_day, a.last_purchase_day, a.spend, a.first_day_spend)
    assert purchases == (b.first_purchase_day, b.last_purchase_day, b.spend, b.first_day_spend)
    days = {e.occurred_at.timestamp() // DAY_S for e in original if e.type == "order"}
    # An order day sets bit day % 64: counted exactly in event-time order, and in any order
    # unless a day arrives inside [first, last] after another with its bit (a multiple of 64
    # days apart): never more than the distinct days.
    in_time_order, _ = fold(sorted(original, key=lambda e: e.occurred_at), now, CONFIG)
    assert in_time_order.purchase_days == len(days)
    assert a.purchase_days <= len(days)
    assert b.purchase_days <= len(days)
    if len({day % 64 for day in days}) == len(days):
        assert a.purchase_days == b.purchase_days == len(days)
    assert a.counts["events"] == len({e.event_id for e in original})
    assert a.first_seen == b.first_seen == min(e.occurred_at.timestamp() for e in original)
    assert a.last_seen == b.last_seen == max(e.occurred_at.timestamp() for e in original)
    assert a.decayed.keys() == b.decayed.keys()
    for name, h in half_lives(CONFIG).items():
        for at in (now, now + 90 * DAY_S):
            assert isclose(a.value(name, h, at), b.value(name, h, at), 1e-9), name


# --- serialization ------------------------------------------------------------------------


def test_round_trip_of_a_fresh_state_is_lossless() -> None:
    state = CustomerState.new("c-ü/1", T0 + 0.123456789)
    assert codec.decode(codec.encode(state)) == state


def test_round_trip_of_a_lived_in_state_is_lossless() -> None:
    events: list[InputEvent] = []
    for i in range(25):
        when = datetime.fromtimestamp(T0 + i * 0.7 * DAY_S + i * 0.001, tz=UTC)
        kind = ["page_view", "payment_error", "add_to_cart"][i % 3]
        events.append(
            ClickstreamEvent(event_id=f"e{i}", customer_id="c", occurred_at=when, type=kind)
        )
    events.append(
        FeedbackEvent(
            event_id="f", customer_id="c", occurred_at=events[-1].occurred_at, type="nps", score=2
        )
    )
    state: CustomerState | None = None
    for event in events:
        t = event.occurred_at.timestamp()
        state = apply_event(state, event, t + 1.5, t + 2.5, CONFIG).state
    assert state is not None
    active = state
    assert active.recent_events
    # and a stretch of silence, so churn alerts and their schedule are in the state too (and
    # the duplicate window has passed)
    state = evaluate_due(state, state.last_seen + 90 * DAY_S, 0.0, CONFIG).state
    assert state.churn_alerts >= 1 and state.last_alert_at and not state.recent_events
    for s in (active, state, codec.decode(codec.encode(state))):
        again = codec.decode(codec.encode(s))
        assert again == s
        assert codec.encode(again) == codec.encode(s)
    assert state.next_check_at is None  # high level reached: nothing scheduled


# --- landmark rebase ----------------------------------------------------------------------


def test_rebase_moves_the_landmark_and_keeps_every_value() -> None:
    hl = {"fast": DAY_S, "slow": 1_000 * DAY_S}
    t1 = T0 + 1_000.0
    t2 = t1 + (REBASE_EXPONENT + 50) * DAY_S  # past the rebase point for "fast" only
    state = with_contributions(CustomerState.new("c", T0), {"fast": 1.0, "slow": 1.0}, t1, hl)
    landmark = state.landmark
    state = with_contributions(state, {"fast": 2.0, "slow": 3.0}, t2, hl)
    assert state.landmark == day_floor(t2) > landmark
    for at in (t2, t2 + 7 * DAY_S, t2 + 3_000 * DAY_S):
        for name, (w1, w2) in (("fast", (1.0, 2.0)), ("slow", (1.0, 3.0))):
            h = hl[name]
            expected = w1 * 2 ** (-(at - t1) / h) + w2 * 2 ** (-(at - t2) / h)
            assert isclose(state.value(name, h, at), expected, 1e-9), (name, at)


def test_decades_of_events_stay_finite_and_exact() -> None:
    """Without the rebase 2**((t - L) / h) would overflow after ~1000 half-lives."""
    hl = half_lives(CONFIG)
    h = hl["searches"]
    state: CustomerState | None = None
    times: list[float] = []
    for i in range(480):  # one event a month for 40 years: ~2000 short half-lives
        when = datetime.fromtimestamp(T0 + i * 30.4 * DAY_S, tz=UTC)
        event = ClickstreamEvent(event_id=f"e{i}", customer_id="c", occurred_at=when, type="search")
        t = when.timestamp()
        times.append(t)
        state = apply_event(state, event, t, t, CONFIG).state
    assert state is not None
    assert state.landmark > T0 + 30 * YEAR_S
    assert all(math.isfinite(v) for v in state.decayed.values())
    w = CONFIG.engagement.weight("search")
    for at in (times[-1], times[-1] + 45 * DAY_S):
        expected = sum(2 ** (-(at - t) / h) for t in times)  # one search each
        assert isclose(state.value("searches", h, at), expected, 1e-9)
    short_h = hl[ACTIVITY_SHORT]
    expected_short = sum(w * 2 ** (-(times[-1] - t) / short_h) for t in times)
    assert isclose(state.value(ACTIVITY_SHORT, short_h, times[-1]), expected_short, 1e-9)


# --- copies -------------------------------------------------------------------------------


def test_evolve_is_replace_and_names_an_unknown_field() -> None:
    state = CustomerState.new("c", T0).with_counts(events=2)
    changed = state.evolve(churn_risk=0.5, tier="loyal")
    assert changed == replace(state, churn_risk=0.5, tier="loyal")
    assert state.churn_risk == 0.0  # the original is untouched
    with pytest.raises(TypeError, match="no field\\(s\\) churn"):
        state.evolve(churn=0.5)


def test_a_silent_customer_forgets_event_ids_past_the_window() -> None:
    when = datetime.fromtimestamp(T0, tz=UTC)
    event = ClickstreamEvent(event_id="e", customer_id="c", occurred_at=when, type="page_view")
    state = apply_event(None, event, T0, T0, CONFIG).state
    assert list(state.recent_events.values()) == [float(math.floor(T0))]
    swept = evaluate_due(state, T0 + 40 * DAY_S, 0.0, CONFIG).state
    assert swept.churn_alerts >= 1 and swept.recent_events == {}


def test_the_compiled_copies_are_evolve() -> None:
    state = CustomerState.new("c", T0)
    fold_like = evolver("decayed", "last_seen")
    for changes in ({}, {"session_hits": 3, "tier": "loyal"}):
        made = fold_like(state, {ACTIVITY_SHORT: 1.0}, T0 + 1, changes)
        assert made == state.evolve(decayed={ACTIVITY_SHORT: 1.0}, last_seen=T0 + 1, **changes)
        assert made is not state
    with pytest.raises(TypeError, match="mood"):
        fold_like(state, {}, T0, {"mood": 1})
    with pytest.raises(TypeError, match="no field"):
        evolver("decayed", "mood")
    made = fold_like(state, {}, T0, {})
    expected = made.evolve(churn_risk=0.25, tier="loyal")
    complete = completer("churn_risk", "tier")
    assert complete(made, 0.25, "loyal") is made
    assert made == expected
    with pytest.raises(TypeError, match="no field"):
        completer("churn_risk", "mood")


@slot_init
@dataclass(frozen=True, slots=True)
class _Pair:
    left: int
    right: str = "r"


def test_a_slot_init_class_is_built_as_its_dataclass_would_be() -> None:
    assert _Pair(1) == _Pair(left=1, right="r")
    assert _Pair(2, right="x").right == "x"
    with pytest.raises(TypeError):
        _Pair()  # type: ignore[call-arg]  # the missing field is the point
    with pytest.raises(FrozenInstanceError):
        _Pair(1).left = 2  # type: ignore[misc]  # frozen, still


def test_a_new_state_is_the_dataclass_with_its_defaults() -> None:
    made = CustomerState.new("c", T0 + 0.5)
    assert made == CustomerState(
        customer_id="c", landmark=day_floor(T0 + 0.5), first_seen=T0 + 0.5, last_seen=T0 + 0.5
    )
    assert made.decayed is not CustomerState.new("d", T0).decayed  # no shared defaults


# --- shortcuts pinned to their definitions -------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_event_digest_is_the_blake2b_of_the_id(event_id: str) -> None:
    expected = hashlib.blake2b(event_id.encode(), digest_size=6).hexdigest()
    assert event_digest(event_id) == expected
    assert event_digest(event_id) == expected  # the shared hasher is only ever copied


def _contributed_by_definition(
    state: CustomerState, weights: dict[str, float], at: float, half_lives: dict[str, float]
) -> tuple[float, dict[str, float]]:
    landmark, decayed = state.landmark, dict(state.decayed)
    if any((at - landmark) / half_lives[n] > REBASE_EXPONENT for n in weights):
        shift = day_floor(at) - landmark
        landmark += shift
        decayed = {n: v * math.pow(2.0, -shift / half_lives[n]) for n, v in decayed.items()}
    for name, weight in weights.items():
        if weight:
            decayed[name] = decayed.get(name, 0.0) + weight * math.pow(
                2.0, (at - landmark) / half_lives[name]
            )
    return landmark, decayed


@settings(max_examples=300, deadline=None)
@given(
    weights=st.dictionaries(
        st.sampled_from(["a", "b", "c"]), st.floats(-5, 5, allow_nan=False), max_size=3
    ),
    elapsed=st.floats(0, 3 * YEAR_S),
    before=st.dictionaries(st.sampled_from(["a", "b", "d"]), st.floats(-1e6, 1e6), max_size=3),
)
def test_contributed_is_bit_for_bit_its_definition(
    weights: dict[str, float], elapsed: float, before: dict[str, float]
) -> None:
    half_lives_s = {"a": 0.5 * DAY_S, "b": 30 * DAY_S, "c": 400 * DAY_S, "d": 7 * DAY_S}
    state = CustomerState.new("c", T0).evolve(decayed=before)
    at = T0 + elapsed
    landmark, decayed = contributed(state.landmark, state.decayed, weights, at, half_lives_s)
    expected_landmark, expected = _contributed_by_definition(state, weights, at, half_lives_s)
    assert landmark == expected_landmark
    assert decayed == expected and list(decayed) == list(expected)
    assert state.decayed == before  # a copy, the state untouched


def test_a_built_state_is_a_frozen_customer_state() -> None:
    # States are filled in as drafts; what comes out must be the real, frozen class.
    assert _Draft.__slots__ == tuple(f.name for f in fields(CustomerState))
    state = CustomerState.new("c", T0)
    fold_like = evolver("decayed", "last_seen")
    made = [
        state,
        state.evolve(tier="loyal"),
        fold_like(state, {}, T0 + 1, {"session_hits": 2}),
        completer("churn_risk")(state.evolve(), 0.5),
        build_state(*(getattr(state, f.name) for f in fields(CustomerState))),
    ]
    for one in made:
        assert type(one) is CustomerState
        with pytest.raises(FrozenInstanceError):
            one.tier = "lost"  # type: ignore[misc]  # frozen, still
    assert made[-1] == state


def test_a_given_field_keeps_its_argument_whatever_the_changes_say() -> None:
    state = CustomerState.new("c", T0)
    fold_like = evolver("decayed", "last_seen")
    made = fold_like(state, {"a": 1.0}, T0 + 5, {"last_seen": T0 + 99, "tier": "loyal"})
    assert made.last_seen == T0 + 5 and made.tier == "loyal" and made.decayed == {"a": 1.0}
