"""The engagement score: features, sub-scores, saturation, reasons that add up."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.config import SUBSCORES, ScoringConfig, load_config, load_profile
from scoring.engagement import FEATURES, _View, engagement, engagement_score
from scoring.engine import apply_event
from scoring.names import COUNT_NAMES, DECAYED_FEATURES, SCORED_FEATURES
from scoring.state import DAY_S, CustomerState

CONFIG = load_config()
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()
IDS = itertools.count()


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def click(t: float, kind: str = "page_view", **fields: Any) -> ClickstreamEvent:
    return ClickstreamEvent(
        event_id=f"e{next(IDS)}", customer_id="c", occurred_at=at(t), type=kind, **fields
    )


def order(t: float, amount: str = "50.00", **fields: Any) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"e{next(IDS)}",
        customer_id="c",
        occurred_at=at(t),
        type="order",
        order_id=f"o{next(IDS)}",
        amount=Decimal(amount),
        currency="EUR",
        **fields,
    )


def feedback(t: float, kind: str, **fields: Any) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=f"e{next(IDS)}", customer_id="c", occurred_at=at(t), type=kind, **fields
    )


def fold(events: list[InputEvent], config: ScoringConfig = CONFIG) -> CustomerState:
    state: CustomerState | None = None
    for e in events:
        t = e.occurred_at.timestamp()
        state = apply_event(state, e, t, t, config).state
    assert state is not None
    return state


def contribution(state: CustomerState, when: float, feature: str) -> float:
    return next(c[3] for c in engagement(state, when, CONFIG).contributions if c[0] == feature)


def share_of(feature: str, config: ScoringConfig = CONFIG) -> float:
    """The most a feature can contribute: its weight's share of its sub-score's share."""
    e = config.engagement
    fw = e.features[feature]
    used = {f.subscore for f in e.features.values()}
    total = sum(w for k, w in e.subscores.items() if k in used)
    members = sum(f.weight for f in e.features.values() if f.subscore == fw.subscore)
    return 100.0 * e.subscores[fw.subscore] / total * fw.weight / members


def test_every_feature_has_a_definition() -> None:
    assert set(FEATURES) == set(SCORED_FEATURES)
    for name in ("retail", "gaming", "subscription"):
        assert set(load_profile(name).engagement.features) <= set(FEATURES)


KINDS = ["page_view", "product_view", "add_to_cart", "search", "share", "referral",
         "email_click", "payment_error", "hologram_view"]  # fmt: skip


@st.composite
def histories(draw: st.DrawFn) -> list[InputEvent]:
    events: list[InputEvent] = []
    for i in range(draw(st.integers(1, 25))):
        t = T0 + draw(st.floats(0, 90 * DAY_S))
        family = draw(st.sampled_from(["click", "session", "order", "nps", "csat", "review"]))
        if family == "click":
            events.append(click(t, draw(st.sampled_from(KINDS)), product_id=f"p{i % 7}"))
        elif family == "session":
            events.append(click(t, "page_view", session_id=f"s{i // 3}", duration_ms=30_000))
        elif family == "order":
            events.append(order(t, str(draw(st.integers(0, 500)))))
        elif family == "nps":
            events.append(feedback(t, "nps", score=draw(st.integers(0, 10))))
        elif family == "csat":
            events.append(feedback(t, "csat", score=draw(st.integers(1, 5)), sentiment=-0.5))
        else:
            events.append(feedback(t, "review", rating=draw(st.integers(1, 5))))
    return sorted(events, key=lambda e: e.occurred_at)


@settings(max_examples=60, deadline=None)
@given(histories(), st.floats(0, 200 * DAY_S))
def test_reasons_add_up_to_the_score_and_subscores_to_their_weighted_mean(
    events: list[InputEvent], later: float
) -> None:
    state = fold(events)
    when = state.last_seen + later
    result = engagement(state, when, CONFIG)
    assert 0.0 <= result.score <= 100.0
    assert math.isclose(sum(c[3] for c in result.contributions), result.score, abs_tol=1e-9)
    reasons = result.reasons(limit=4)
    assert len(reasons) <= 5
    assert math.isclose(sum(r.contribution for r in reasons), result.score, abs_tol=1e-9)
    e = CONFIG.engagement
    assert set(result.subscores) == set(SUBSCORES)
    weighted = sum(e.subscores[k] * v for k, v in result.subscores.items()) / sum(
        e.subscores.values()
    )
    assert math.isclose(weighted, result.score, abs_tol=1e-9)
    assert all(0.0 <= v <= 100.0 for v in result.subscores.values())
    for name, _, _, c in result.contributions:
        assert abs(c) <= share_of(name) + 1e-9


def test_no_single_feature_can_dominate() -> None:
    burst = fold([click(T0 + i, "product_view") for i in range(2_000)])
    score = engagement_score(burst, T0 + 2_000, CONFIG)
    assert score == pytest.approx(share_of("product_views") + share_of("visits") * 0, abs=0.01)
    assert score < 10.0


def test_a_count_saturates_and_halves_with_its_half_life() -> None:
    state = fold([click(T0, "add_to_cart")])
    fw = CONFIG.engagement.features["add_to_cart"]
    h = CONFIG.engagement.half_life_days * DAY_S
    for dt, value in ((0.0, 1.0), (h, 0.5), (3 * h, 0.125)):
        expected = share_of("add_to_cart") * (1 - math.exp(-value / fw.saturation))
        assert contribution(state, T0 + dt, "add_to_cart") == pytest.approx(expected, rel=1e-12)


def test_sessions_pages_bounces_and_conversions() -> None:
    events: list[InputEvent] = [
        click(T0, "page_view", session_id="s1"),  # a bounce
        click(T0 + DAY_S, "page_view", session_id="s2"),
        click(T0 + DAY_S + 60, "product_view", session_id="s2", product_id="p1"),
        order(T0 + DAY_S + 120),  # converts s2 (within the session timeout)
        order(T0 + DAY_S + 180),  # the same session: counts once
        click(T0 + 2 * DAY_S, "page_view", session_id="s3"),
        order(T0 + 2 * DAY_S + 60, session_id="other"),  # names another session
    ]
    state = fold(events)
    counts = state.counts
    assert counts["sessions"] == 3
    assert counts["bounces"] == 2  # s1 and s3 have one hit each
    assert counts["conversions"] == 1
    assert counts["orders"] == 3
    when = state.last_seen
    h = CONFIG.half_lives_s["sessions"]
    decay = [2 ** (-(when - t) / h) for t in (T0, T0 + DAY_S, T0 + 2 * DAY_S)]
    bounce_rate = (decay[0] + decay[2]) / sum(decay)
    bounce = contribution(state, when, "bounce_rate")
    assert bounce < 0
    fws = CONFIG.engagement.features
    members = [f for f in fws.values() if f.subscore == "convenience"]
    assert abs(bounce) <= share_of("bounce_rate") * bounce_rate + 1e-9
    conversion = contribution(state, when, "conversion_rate")
    assert conversion == pytest.approx(share_of("conversion_rate") * decay[1] / sum(decay))
    assert members  # the convenience sub-score has features in the retail profile


def test_feedback_levels_are_signed_around_neutral() -> None:
    promoter = fold([feedback(T0, "nps", score=10), feedback(T0 + 1, "csat", score=5)])
    detractor = fold([feedback(T0, "nps", score=0), feedback(T0 + 1, "csat", score=1)])
    for feature in ("nps", "last_nps", "csat"):
        assert contribution(promoter, T0 + 1, feature) == pytest.approx(share_of(feature))
    # negatives are scaled down to cancel the positives of their sub-score, never beyond
    assert engagement(detractor, T0 + 1, CONFIG).subscores["emotional"] == 0.0
    assert contribution(detractor, T0 + 1, "nps") == 0.0
    mixed = fold([feedback(T0, "nps", score=3), feedback(T0 + 1, "review", rating=5)])
    result = engagement(mixed, T0 + 1, CONFIG)
    # review 5 (weight 0.5) against NPS 3 as mean and last answer (weights 1 + 0.5)
    scale = (0.5 * 1.0) / (1.5 * 4 / 7)
    assert contribution(mixed, T0 + 1, "nps") == pytest.approx(share_of("nps") * -4 / 7 * scale)
    assert result.subscores["emotional"] == 0.0
    assert sum(c[3] for c in result.contributions if c[1] == "emotional") == pytest.approx(0.0)
    passive = fold([feedback(T0, "nps", score=7)])
    assert contribution(passive, T0, "nps") == 0.0


def test_bad_experiences_returns_and_open_tickets_pull_down() -> None:
    good = [
        click(T0 + i * 60, "product_view", session_id="s", product_id=f"p{i}") for i in range(6)
    ]
    good += [order(T0 + 600, items=[{"product_id": "p1", "category": "books"}])]
    base = fold(good)
    worse = fold(
        [
            *good,
            click(T0 + 700, "payment_error", session_id="s"),
            feedback(T0 + 800, "support_ticket", status="opened"),
        ]
    )
    when = T0 + 900
    assert engagement_score(worse, when, CONFIG) < engagement_score(base, when, CONFIG)
    assert contribution(worse, when, "bad_experiences") < 0
    assert contribution(worse, when, "open_tickets") < 0
    returned = fold(
        [
            *good,
            PurchaseEvent(
                event_id="r1",
                customer_id="c",
                occurred_at=at(T0 + 700),
                type="return",
                order_id="o",
                amount=Decimal("5"),
                currency="EUR",
            ),
        ]
    )
    assert contribution(returned, when, "returns_share") == pytest.approx(
        -share_of("returns_share")
    )


def test_the_gaming_profile_counts_playing_days_and_games() -> None:
    gaming = load_profile("gaming")
    plays = [
        click(T0 + d * DAY_S + i * 60, "game_round", product_id=f"g{d % 3}")
        for d in range(5)
        for i in range(4)
    ]
    state = fold([*plays, click(T0 + 5 * DAY_S, "deposit")], gaming)
    h = gaming.half_lives_s["play_days"]
    expected = sum(2 ** (-(state.last_seen - (T0 + d * DAY_S)) / h) for d in range(5))
    assert state.value("play_days", h, state.last_seen) == pytest.approx(expected)
    result = engagement(state, state.last_seen, gaming)
    factors = {c[0] for c in result.contributions if c[3] > 0}
    assert {"playing_days", "plays", "product_variety", "deposits"} <= factors
    # the retail profile does not look at games
    assert "playing_days" not in {
        c[0] for c in engagement(state, state.last_seen, CONFIG).contributions
    }


@settings(max_examples=60, deadline=None)
@given(
    histories(), st.floats(0, 200 * DAY_S), st.sampled_from(["retail", "gaming", "subscription"])
)
def test_the_score_alone_is_the_explained_score_to_the_bit(
    events: list[InputEvent], later: float, profile: str
) -> None:
    """Alert snapshots take engagement_score, which skips the details and sub-scores: it
    must be the score engagement() explains, exactly."""
    config = load_profile(profile)
    state = fold(events, config)
    when = state.last_seen + later
    fast, explained = engagement_score(state, when, config), engagement(state, when, config).score
    assert math.copysign(1.0, fast) == math.copysign(1.0, explained)
    assert fast == explained


@st.composite
def any_states(draw: st.DrawFn) -> CustomerState:
    """States no history need lead to (open tickets, NaN-free extremes, zeros of every
    kind), for what must hold of every state."""
    amounts = st.one_of(st.just(0.0), st.floats(1e-300, 1e6))
    return CustomerState(
        customer_id="c",
        landmark=T0,
        decayed=draw(st.dictionaries(st.sampled_from(DECAYED_FEATURES), amounts)),
        counts=draw(st.dictionaries(st.sampled_from(COUNT_NAMES), st.integers(0, 10**6))),
        last_nps=draw(st.integers(-1, 10)),
        items_seen=draw(st.integers(0, 2**64 - 1)),
        categories=draw(st.sampled_from([0, 1, 2**64 - 1])),
    )


@settings(max_examples=200, deadline=None)
@given(any_states(), st.floats(0, 400 * DAY_S), st.sampled_from(["retail", "gaming"]))
def test_a_feature_is_zero_while_the_input_it_needs_is_zero(
    state: CustomerState, later: float, profile: str
) -> None:
    """engagement_score skips a feature whose ``needs`` input is zero: its definition must
    then give zero, whatever the rest of the state; and the score stays engagement()'s."""
    config = load_profile(profile)
    when = T0 + later
    for name, feature in FEATURES.items():
        if feature.needs is None:
            continue
        where, key = feature.needs
        if where == "decayed":
            zeroed = state.evolve(decayed={**state.decayed, key: 0.0})
        elif where == "counts":
            zeroed = state.evolve(counts={**state.counts, key: 0})
        else:
            zeroed = state.evolve(**{key: 0})
        weighted = config.engagement.features.get(name)
        saturation = 1.0 if weighted is None else weighted.saturation
        assert feature.value(_View(zeroed, when, config), saturation) == 0.0, name
    fast, explained = engagement_score(state, when, config), engagement(state, when, config).score
    assert fast == explained


def test_a_new_customer_scores_as_explained() -> None:
    """A first event leaves most terms zero (the case engagement_score shortcuts)."""
    for event in [
        feedback(T0, "nps", score=1),
        feedback(T0, "csat", score=2, sentiment=-0.5),
        feedback(T0, "review", rating=1),
        feedback(T0, "support_ticket", status="opened"),
        click(T0, "checkout_error", page="/checkout"),
        click(T0, "page_view", session_id="s", duration_ms=5_000),
        order(T0),
    ]:
        state = apply_event(None, event, T0, T0, CONFIG).state
        for when in (T0, T0 + 3 * DAY_S):
            assert engagement_score(state, when, CONFIG) == engagement(state, when, CONFIG).score


@settings(max_examples=300, deadline=None)
@given(
    scaled=st.floats(allow_nan=False),
    landmark=st.floats(-1e10, 1e10),
    at=st.floats(-1e10, 1e10),
    name=st.sampled_from(sorted(DECAYED_FEATURES)),
)
def test_a_views_decayed_value_is_the_states_to_the_bit(
    scaled: float, landmark: float, at: float, name: str
) -> None:
    """_View.v computes CustomerState.value inline (a call of the state's method cost as
    much as the rest of a feature's term): the same float, sign and all."""
    config = load_config()
    state = CustomerState(customer_id="c", landmark=landmark, decayed={name: scaled})
    view = _View(state, at, config)
    try:
        want = state.value(name, config.half_lives_s[name], at)
    except OverflowError:  # far before the landmark: 2 ** (a large exponent)
        with pytest.raises(OverflowError):
            view.v(name)
        return
    got = view.v(name)
    assert got == want or (got != got and want != want)
    assert math.copysign(1.0, got) == math.copysign(1.0, want)
