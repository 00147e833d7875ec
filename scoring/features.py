"""What one event adds to a customer's state: decayed features, counters, purchases,
sessions and the other per-customer facts the scores are computed from.

The names it fills are in scoring/names.py.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.names import ACTIVITY_LONG, ACTIVITY_SHORT, BAD_EXPERIENCES
from scoring.state import DAY_S, REBASE_EXPONENT, CustomerState, bit_of, day_floor, evolver

if TYPE_CHECKING:
    from scoring.config import ScoringConfig

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
    """The landmark and decayed sums once each weight is added at ``at`` to its feature;
    ``half_lives`` covers every feature. Here, not in scoring/state.py, so that it runs
    compiled: every event passes through it."""
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


def with_contributions(
    state: CustomerState, weights: Mapping[str, float], at: float, half_lives: Mapping[str, float]
) -> CustomerState:
    """``state`` with each weight added at time ``at`` to its feature."""
    landmark, decayed = contributed(state.landmark, state.decayed, weights, at, half_lives)
    return state.evolve(landmark=landmark, decayed=decayed)


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
