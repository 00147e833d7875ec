"""What one event adds to a customer's state: decayed features, counters, purchases,
sessions and the other per-customer facts the scores are computed from.

The names here are also the fixed orders of the compact encoding (scoring/codec.py):
append new ones at the end, never reorder.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.state import DAY_S, REBASE_EXPONENT, CustomerState, bit_of, day_floor, evolver

if TYPE_CHECKING:
    from scoring.config import ScoringConfig

# Momentum levels and bad experiences have their own half-lives; every other decayed
# feature uses engagement.half_life_days unless engagement.feature_half_life_days says.
ACTIVITY_SHORT: Final = "short"
ACTIVITY_LONG: Final = "long"
BAD_EXPERIENCES: Final = "bad"
DECAYED_FEATURES: tuple[str, ...] = (
    ACTIVITY_SHORT,
    ACTIVITY_LONG,
    BAD_EXPERIENCES,
    "sessions",
    "hits",  # clickstream events inside sessions ("pages")
    "minutes",  # time on site, from duration_ms
    "product_views",
    "carts",
    "searches",
    "campaign",  # email, ad and push clicks, and anything with a campaign_id
    "incentives",
    "shares",
    "referrals",
    "reviews",
    "orders",
    "spend",
    "conversions",
    "bounces",
    "sentiment",  # sum of feedback sentiment, -1..1 each
    "sentiment_n",  # how many feedback events had one
    "plays",
    "play_days",
    "deposits",
    "withdrawals",
)

# Cumulative counters; the first eleven are read by the KPI helper under these names.
COUNT_NAMES: tuple[str, ...] = (
    "events",
    "orders",
    "returns",  # returns and refunds
    "sessions",
    "bounces",  # sessions with one hit so far
    "conversions",  # sessions with an order
    "nps_answers",
    "promoters",
    "detractors",
    "csat_answers",
    "csat_satisfied",  # CSAT 4 or 5
    "cancellations",
    "feedback",
    "bad_experiences",
    "nps_sum",
    "csat_sum",
    "reviews",
    "rating_sum",
    "tickets_opened",
    "tickets_resolved",
    "responses",
    "response_s",
    "resolutions",
    "resolution_s",
    "shares",
    "referrals",
)

ALERT_KINDS: tuple[str, ...] = (
    "churn_risk",
    "detractor_feedback",
    "low_csat",
    "negative_review",
    "product_return",
    "bad_experience",
    "negative_sentiment",
    "loyalty_milestone",
)

# Index 0 is "not evaluated yet".
TIERS: tuple[str, ...] = ("", "lost", "hibernating", "at_risk", "promising", "loyal", "champion")

# Features the engagement score can weigh (scoring/engagement.py defines each one).
SCORED_FEATURES: tuple[str, ...] = (
    "product_views",
    "add_to_cart",
    "searches",
    "product_variety",
    "visits",
    "pages_per_session",
    "time_on_site",
    "conversion_rate",
    "bounce_rate",
    "bad_experiences",
    "open_tickets",
    "response_time",
    "resolution_time",
    "nps",
    "last_nps",
    "csat",
    "review_rating",
    "sentiment",
    "shares",
    "reviews",
    "referrals",
    "purchase_frequency",
    "spend",
    "category_variety",
    "returns_share",
    "playing_days",
    "plays",
    "deposits",
    "withdrawals",
    "campaign_clicks",
    "incentives",
)

# Clickstream types feeding a decayed feature; a profile's engagement.event_features adds
# to these.
CLICK_TYPES: dict[str, str] = {
    "product_view": "product_views",
    "add_to_cart": "carts",
    "search": "searches",
    "search_no_results": "searches",
    "email_click": "campaign",
    "ad_click": "campaign",
    "push_click": "campaign",
    "share": "shares",
    "referral": "referrals",
    "bonus_claim": "incentives",
    "incentive_click": "incentives",
    "deposit": "deposits",
    "withdrawal": "withdrawals",
    "game_round": "plays",
}


# What fold changes for every event, in the order it passes them.
_evolve_folded = evolver(
    "landmark", "decayed", "counts", "recent_events", "first_seen", "last_seen"
)


def half_lives_s(config: ScoringConfig) -> dict[str, float]:
    """Half-life in seconds of every decayed feature."""
    e = config.engagement
    out = {
        name: e.feature_half_life_days.get(name, e.half_life_days) * DAY_S
        for name in DECAYED_FEATURES
    }
    out[ACTIVITY_SHORT] = config.momentum.short_half_life_days * DAY_S
    out[ACTIVITY_LONG] = config.momentum.long_half_life_days * DAY_S
    out[BAD_EXPERIENCES] = config.churn.bad_experience_half_life_days * DAY_S
    return out


def day_of(t: float) -> int:
    return int(t // DAY_S)


def session_key(session_id: str) -> int:
    """A non-zero 32-bit digest of a session id: consecutive sessions never collide in
    practice, and only the session in progress is compared."""
    return zlib.crc32(session_id.encode()) or 1


def fold(
    state: CustomerState,
    event: InputEvent,
    t: float,
    recent: dict[str, float],
    config: ScoringConfig,
) -> CustomerState:
    """The state with ``event`` (at time ``t``) added. Events of one customer arrive in
    event-time order (the pipeline guarantees it on the event clock), so the session in
    progress, the last purchase day and the last NPS answer are enough to compare with."""
    weight = config.engagement.weight(event.type)
    # decayed feature -> (contribution, time it is added at)
    adds: dict[str, float] = {ACTIVITY_SHORT: weight, ACTIVITY_LONG: weight}
    at_start: dict[str, float] = {}
    counts = dict(state.counts)
    counts["events"] = counts.get("events", 0) + 1
    changes: dict[str, object] = {}

    if isinstance(event, ClickstreamEvent):
        kind = event.type
        if kind in config.bad_experiences:
            adds[BAD_EXPERIENCES] = 1.0
            _inc(counts, "bad_experiences")
        feature = config.engagement.event_features.get(kind) or CLICK_TYPES.get(kind)
        if feature is None and event.campaign_id is not None:
            feature = "campaign"
        if feature is not None:
            adds[feature] = adds.get(feature, 0.0) + 1.0
            if feature in ("shares", "referrals"):
                _inc(counts, feature)
            elif feature == "plays":
                day = day_of(t)
                if day != state.last_play_day:
                    adds["play_days"] = 1.0
                    changes["last_play_day"] = day
        if event.duration_ms:
            adds["minutes"] = event.duration_ms / 60_000.0
        if event.product_id is not None:
            changes["items_seen"] = state.items_seen | bit_of(event.product_id)
        if event.session_id is not None:
            key = session_key(event.session_id)
            adds["hits"] = 1.0
            if key != state.session:
                adds["sessions"] = 1.0
                adds["bounces"] = 1.0
                _inc(counts, "sessions")
                _inc(counts, "bounces")
                changes.update(
                    session=key, session_start=t, session_hits=1, session_converted=False
                )
            else:
                hits = state.session_hits + 1
                changes["session_hits"] = hits
                if hits == 2:
                    # no longer a single-hit session: take back its bounce, at its start
                    at_start["bounces"] = -1.0
                    _inc(counts, "bounces", -1)
    elif isinstance(event, PurchaseEvent):
        if event.type == "order":
            _order(state, event, t, adds, at_start, changes, counts, config)
        elif event.type in ("return", "refund"):
            _inc(counts, "returns")
        else:
            _inc(counts, "cancellations")
    else:
        _feedback(event, adds, changes, counts)

    h = config.half_lives_s
    landmark, decayed = contributed(state.landmark, state.decayed, adds, t, h)
    if at_start:
        # Same landmark: session_start is never after t, and a rebase only moves forward.
        for name, w in at_start.items():
            decayed[name] = decayed.get(name, 0.0) + w * math.pow(
                2.0, (state.session_start - landmark) / h[name]
            )
    # min() and max() of two, without their calls: ties keep the state's value.
    first_seen = t if t < state.first_seen else state.first_seen
    last_seen = t if t > state.last_seen else state.last_seen
    return _evolve_folded(state, landmark, decayed, counts, recent, first_seen, last_seen, changes)


def contributed(
    landmark: float,
    decayed_before: Mapping[str, float],
    weights: Mapping[str, float],
    at: float,
    half_lives: Mapping[str, float],
) -> tuple[float, dict[str, float]]:
    """``CustomerState.contributed`` (the landmark and decayed sums once each weight is
    added at ``at``), here so that it runs compiled: every event passes through it."""
    decayed = dict(decayed_before)
    elapsed = at - landmark
    for name in weights:
        if elapsed / half_lives[name] > REBASE_EXPONENT:
            shift = day_floor(at) - landmark
            landmark += shift
            elapsed = at - landmark
            decayed = {n: v * math.pow(2.0, -shift / half_lives[n]) for n, v in decayed.items()}
            break
    for name, weight in weights.items():
        if weight:
            decayed[name] = decayed.get(name, 0.0) + weight * math.pow(
                2.0, elapsed / half_lives[name]
            )
    return landmark, decayed


def _order(
    state: CustomerState,
    event: PurchaseEvent,
    t: float,
    adds: dict[str, float],
    at_start: dict[str, float],
    changes: dict[str, object],
    counts: dict[str, int],
    config: ScoringConfig,
) -> None:
    amount = float(event.amount)
    _inc(counts, "orders")
    adds["orders"] = 1.0
    if amount:
        adds["spend"] = amount
    changes["spend"] = state.spend + amount
    day = day_of(t)
    first, last = state.first_purchase_day, state.last_purchase_day
    bit = 1 << (day % 64)
    if first < 0:
        changes.update(first_purchase_day=day, last_purchase_day=day, first_day_spend=amount)
        new_day = True
    else:
        # A day outside [first, last] is new; one inside is new unless its bit is set
        # (exact for days less than 64 apart, and for orders in event-time order).
        new_day = day < first or day > last or not state.purchase_day_bits & bit
        if day < first:
            changes.update(first_purchase_day=day, first_day_spend=amount)
        elif day == first:
            changes["first_day_spend"] = state.first_day_spend + amount
        if day > last:
            changes["last_purchase_day"] = day
    if new_day:
        changes["purchase_days"] = state.purchase_days + 1
    changes["purchase_day_bits"] = state.purchase_day_bits | bit
    bought, categories = state.products_bought, state.categories
    for item in event.items:
        bought |= bit_of(item.product_id)
        if item.category:
            categories |= bit_of(item.category)
    changes.update(products_bought=bought, categories=categories)
    # A conversion: the session in progress gets its first order (the order names it, or
    # comes within the session timeout of the customer's last event).
    if state.session and not state.session_converted:
        if event.session_id is not None:
            same = session_key(event.session_id) == state.session
        else:
            timeout = config.engagement.session_timeout_minutes * 60.0
            same = t - state.last_seen <= timeout
        if same:
            at_start["conversions"] = 1.0
            _inc(counts, "conversions")
            changes["session_converted"] = True


def _feedback(
    event: FeedbackEvent,
    adds: dict[str, float],
    changes: dict[str, object],
    counts: dict[str, int],
) -> None:
    _inc(counts, "feedback")
    score = event.score
    if event.type == "nps" and score is not None:
        _inc(counts, "nps_answers")
        _inc(counts, "nps_sum", score)
        if score >= 9:
            _inc(counts, "promoters")
        elif score <= 6:
            _inc(counts, "detractors")
        changes["last_nps"] = score
    elif event.type == "csat" and score is not None:
        _inc(counts, "csat_answers")
        _inc(counts, "csat_sum", score)
        if score >= 4:
            _inc(counts, "csat_satisfied")
    elif event.type == "review":
        adds["reviews"] = 1.0
        _inc(counts, "reviews")
        if event.rating is not None:
            _inc(counts, "rating_sum", event.rating)
    elif event.type == "support_ticket":
        _inc(counts, "tickets_resolved" if event.status == "resolved" else "tickets_opened")
    if event.first_response_s is not None:
        _inc(counts, "responses")
        _inc(counts, "response_s", round(event.first_response_s))
    if event.resolution_s is not None:
        _inc(counts, "resolutions")
        _inc(counts, "resolution_s", round(event.resolution_s))
    if event.sentiment is not None:
        adds["sentiment"] = event.sentiment
        adds["sentiment_n"] = 1.0


def _inc(counts: dict[str, int], name: str, n: int = 1) -> None:
    counts[name] = counts.get(name, 0) + n
