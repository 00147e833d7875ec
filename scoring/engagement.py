"""The engagement score: features -> six sub-scores -> one score, 0..100, with reasons.

Each configured feature gives a term in -1..1: counts and amounts saturate,
``1 - exp(-value / saturation)``; rates are shares (0..1); answers on a scale are signed
around their neutral point; what hurts (bounces, returns, bad experiences, open tickets,
slow support, withdrawals) is negative. A sub-score is its features' weighted mean,
positive minus negative, floored at 0 (when the negatives outweigh the positives they
are scaled down to cancel them exactly, so contributions still add up). The score is
100 x the weighted mean of the sub-scores. A feature's contribution is its share of that
sum, so the reasons add up to the score, and no feature can weigh more than its weight's
share of its sub-score's weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from schemas.alerts import Reason
from scoring.config import SUBSCORES, FeatureWeight, ScoringConfig, Subscore
from scoring.names import BAD_EXPERIENCES
from scoring.state import CustomerState, distinct_estimate

Term = tuple[float, str]
# Where a feature's input lives, and its name: ("decayed", sum) or ("counts", counter) of
# the state, or ("attr", attribute). See ``Feature.needs``.
Needs = tuple[Literal["decayed", "counts", "attr"], str]


def _decayed(scaled: float, since_landmark: float, half_life_s: float) -> float:
    """``CustomerState.value``, the same operations, on a decayed sum read already: a call
    of the state's (pure Python) method cost as much as the rest of a feature's term."""
    if scaled == 0.0:
        return 0.0
    return scaled * math.pow(2.0, -since_landmark / half_life_s)


def _saturating(value: float, saturation: float) -> float:
    return 1.0 - math.exp(-max(0.0, value) / saturation)


def _level(value: float, low: float, neutral: float, high: float) -> float:
    """-1 at ``low``, 0 at ``neutral``, 1 at ``high``."""
    if value >= neutral:
        return min(1.0, (value - neutral) / (high - neutral))
    return max(-1.0, (value - neutral) / (neutral - low))


class _View:
    """Decayed values of one state at one time, each computed once."""

    def __init__(self, state: CustomerState, at: float, config: ScoringConfig) -> None:
        self.state, self.at, self.h = state, at, config.half_lives_s
        self.decayed, self.since_landmark = state.decayed, at - state.landmark
        self.cache: dict[str, float] = {}

    def v(self, name: str) -> float:
        value = self.cache.get(name)
        if value is None:
            half_life_s = self.h[name]
            value = _decayed(self.decayed.get(name, 0.0), self.since_landmark, half_life_s)
            self.cache[name] = value
        return value

    def per_session(self, name: str) -> float:
        sessions = self.v("sessions")
        return self.v(name) / sessions if sessions > 0 else 0.0


class Feature:
    """One feature's term in -1..1 (``value``, from a view and the feature's saturation)
    and what it says about the customer (``detail``: only built for reasons, which the
    score alone does not need)."""

    __slots__ = ("decayed", "detail", "needs", "sign", "value")

    def __init__(
        self,
        value: Callable[[_View, float], float],
        detail: Callable[[_View], str],
        decayed: str | None = None,
        sign: float = 1.0,
        needs: Needs | None = None,
    ) -> None:
        self.value, self.detail = value, detail
        # A decayed amount's term is ``sign * _saturating(value of decayed)``: said here
        # too, so the score alone can compute it without the calls.
        self.decayed, self.sign = decayed, sign
        # The value is exactly zero (of either sign) while this input is zero: the score
        # alone skips the call then (most of a new customer's features; pinned by a test).
        self.needs = needs

    def __call__(self, view: _View, saturation: float) -> Term:
        return self.value(view, saturation), self.detail(view)


def _amount(name: str, what: str, sign: float = 1.0) -> Feature:
    return Feature(
        lambda view, saturation: sign * _saturating(view.v(name), saturation),
        lambda view: f"{view.v(name):.1f} {what} (decayed)",
        decayed=name,
        sign=sign,
    )


def _distinct(bitmap: Callable[[CustomerState], int], what: str, attr: str) -> Feature:
    return Feature(
        lambda view, saturation: _saturating(distinct_estimate(bitmap(view.state)), saturation),
        lambda view: f"about {distinct_estimate(bitmap(view.state)):.0f} distinct {what}",
        needs=("attr", attr),
    )


def _share(name: str) -> Callable[[_View], float]:
    return lambda view: min(1.0, max(0.0, view.per_session(name)))


_conversions, _bounces = _share("conversions"), _share("bounces")


def _open(state: CustomerState) -> int:
    return max(0, state.count("tickets_opened") - state.count("tickets_resolved"))


def _support_hours(total: str, n: str, what: str) -> Feature:
    def hours(view: _View) -> float:
        return view.state.count(total) / view.state.count(n) / 3_600.0

    def value(view: _View, saturation: float) -> float:
        if not view.state.count(n):
            return 0.0
        return -_saturating(hours(view), saturation)

    def detail(view: _View) -> str:
        if not view.state.count(n):
            return f"no {what} measured"
        return f"{what} {hours(view):.1f} h on average"

    return Feature(value, detail, needs=("counts", n))


def _average(total: str, n: str, scale: tuple[float, float, float], what: str) -> Feature:
    def value(view: _View, _: float) -> float:
        answers = view.state.count(n)
        if not answers:
            return 0.0
        return _level(view.state.count(total) / answers, *scale)

    def detail(view: _View) -> str:
        answers = view.state.count(n)
        if not answers:
            return f"no {what}"
        mean = view.state.count(total) / answers
        return f"average {what} {mean:.1f} ({answers} answers)"

    return Feature(value, detail, needs=("counts", n))


def _last_nps(view: _View, _: float) -> float:
    last = view.state.last_nps
    return 0.0 if last < 0 else _level(last, 0.0, 7.0, 10.0)


def _last_nps_detail(view: _View) -> str:
    last = view.state.last_nps
    return "no NPS answer" if last < 0 else f"last NPS answer {last}"


def _sentiment(view: _View) -> float | None:
    n = view.v("sentiment_n")
    return None if n <= 0 else max(-1.0, min(1.0, view.v("sentiment") / n))


def _sentiment_value(view: _View, _: float) -> float:
    mean = _sentiment(view)
    return 0.0 if mean is None else mean


def _sentiment_detail(view: _View) -> str:
    mean = _sentiment(view)
    return (
        "no sentiment measured"
        if mean is None
        else f"feedback sentiment {mean:+.2f} (decayed mean)"
    )


def _returns_share(view: _View, _: float) -> float:
    s = view.state
    orders = s.count("orders")
    return -(min(1.0, s.count("returns") / orders) if orders else 0.0)


def _returns_detail(view: _View) -> str:
    s = view.state
    return f"{s.count('returns')} returns or refunds for {s.count('orders')} orders"


FEATURES: dict[str, Feature] = {
    "product_views": _amount("product_views", "product views"),
    "add_to_cart": _amount("carts", "add-to-carts"),
    "searches": _amount("searches", "searches"),
    "product_variety": _distinct(lambda s: s.items_seen, "products viewed", "items_seen"),
    "visits": _amount("sessions", "sessions"),
    "pages_per_session": Feature(
        lambda view, saturation: _saturating(view.per_session("hits"), saturation),
        lambda view: f"{view.per_session('hits'):.1f} pages per session",
        needs=("decayed", "sessions"),
    ),
    "time_on_site": _amount("minutes", "minutes on site"),
    "conversion_rate": Feature(
        lambda view, _: _conversions(view),
        lambda view: f"{100 * _conversions(view):.0f}% of recent sessions ended in an order",
        needs=("decayed", "sessions"),
    ),
    "bounce_rate": Feature(
        lambda view, _: -_bounces(view),
        lambda view: f"{100 * _bounces(view):.0f}% of recent sessions were single-page",
        needs=("decayed", "sessions"),
    ),
    "bad_experiences": _amount(BAD_EXPERIENCES, "bad experiences", sign=-1.0),
    "open_tickets": Feature(
        lambda view, saturation: -_saturating(_open(view.state), saturation),
        lambda view: f"{_open(view.state)} support tickets open",
        needs=("counts", "tickets_opened"),
    ),
    "response_time": _support_hours("response_s", "responses", "first response"),
    "resolution_time": _support_hours("resolution_s", "resolutions", "resolution"),
    "nps": _average("nps_sum", "nps_answers", (0.0, 7.0, 10.0), "NPS"),
    "last_nps": Feature(_last_nps, _last_nps_detail),
    "csat": _average("csat_sum", "csat_answers", (1.0, 3.0, 5.0), "CSAT"),
    "review_rating": _average("rating_sum", "reviews", (1.0, 3.0, 5.0), "review rating"),
    "sentiment": Feature(_sentiment_value, _sentiment_detail, needs=("decayed", "sentiment_n")),
    "shares": _amount("shares", "shares"),
    "reviews": _amount("reviews", "reviews"),
    "referrals": _amount("referrals", "referrals"),
    "purchase_frequency": _amount("orders", "orders"),
    "spend": _amount("spend", "spent"),
    "category_variety": _distinct(lambda s: s.categories, "categories bought", "categories"),
    "returns_share": Feature(_returns_share, _returns_detail, needs=("counts", "orders")),
    "playing_days": _amount("play_days", "playing days"),
    "plays": _amount("plays", "plays"),
    "deposits": _amount("deposits", "deposits"),
    "withdrawals": _amount("withdrawals", "withdrawals", sign=-1.0),
    "campaign_clicks": _amount("campaign", "campaign clicks"),
    "incentives": _amount("incentives", "incentive responses"),
}


# Rates and answers on a scale: their term is the value itself, no saturation applies.
UNSATURATED = frozenset(
    {
        "conversion_rate",
        "bounce_rate",
        "nps",
        "last_nps",
        "csat",
        "review_rating",
        "sentiment",
        "returns_share",
    }
)


@dataclass(frozen=True, slots=True)
class Engagement:
    score: float  # 0..100
    subscores: dict[str, float]  # 0..100 each
    # (feature, sub-score, detail, contribution to the score), largest effect first
    contributions: tuple[tuple[str, str, str, float], ...]

    def reasons(self, limit: int | None = None) -> list[Reason]:
        """The contributions as reasons; past ``limit``, the rest are summed as "other"."""
        items = [c for c in self.contributions if c[3] != 0.0]
        shown, rest = (items, []) if limit is None else (items[:limit], items[limit:])
        out = [Reason(factor=f, detail=f"{sub}: {d}", contribution=c) for f, sub, d, c in shown]
        if rest:
            out.append(
                Reason(
                    factor="other",
                    detail=f"{len(rest)} smaller factors",
                    contribution=sum(c[3] for c in rest),
                )
            )
        return out


# Per sub-score: its name, its share of the score, its members' total weight, and each
# member (name, weight, saturation, feature).
_Member = tuple[str, float, float, Feature]
_Plan = tuple[tuple[Subscore, float, float, tuple[_Member, ...]], ...]
_PLANS: dict[int, tuple[ScoringConfig, _Plan | None]] = {}


def _plan(config: ScoringConfig) -> _Plan | None:
    """What of the config the score needs, worked out once per config (None: no weight).
    Keyed by identity; the entry holds the config, so its id is not reused meanwhile."""
    cached = _PLANS.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    e = config.engagement
    by_subscore: dict[Subscore, list[tuple[str, FeatureWeight]]] = {}
    for name, fw in e.features.items():
        if fw.weight > 0:
            by_subscore.setdefault(fw.subscore, []).append((name, fw))
    weights = {k: e.subscores.get(k, 0.0) for k in SUBSCORES if k in by_subscore}
    total_weight = sum(weights.values())
    plan: _Plan | None = None
    if total_weight > 0:
        plan = tuple(
            (
                sub,
                100.0 * weights[sub] / total_weight,
                sum(fw.weight for _, fw in members),
                tuple((name, fw.weight, fw.saturation, FEATURES[name]) for name, fw in members),
            )
            for sub, members in by_subscore.items()
        )
    if len(_PLANS) >= 64:
        _PLANS.clear()
    _PLANS[id(config)] = (config, plan)
    return plan


def engagement(state: CustomerState, at: float, config: ScoringConfig) -> Engagement:
    plan = _plan(config)
    subscores: dict[str, float] = dict.fromkeys(SUBSCORES, 0.0)
    if plan is None:
        return Engagement(0.0, subscores, ())
    view = _View(state, at, config)
    contributions: list[tuple[str, str, str, float]] = []
    for sub, share, member_weight, members in plan:
        terms = []
        for name, weight, saturation, feature in members:
            value, detail = feature(view, saturation)
            terms.append((name, detail, weight * value / member_weight))
        positive = sum(t for _, _, t in terms if t > 0)
        negative = -sum(t for _, _, t in terms if t < 0)
        scale = positive / negative if negative > positive else 1.0
        level = 0.0
        for name, detail, t in terms:
            part = t * scale if t < 0 else t
            level += part
            contributions.append((name, sub, detail, share * part))
        subscores[sub] = 100.0 * max(0.0, level)
    contributions.sort(key=lambda c: (-abs(c[3]), c[0]))
    score = min(100.0, max(0.0, sum(c[3] for c in contributions)))
    return Engagement(score, subscores, tuple(contributions))


def engagement_score(state: CustomerState, at: float, config: ScoringConfig) -> float:
    """0..100 (see the module docstring): ``engagement(...).score`` to the bit, without
    the details and sub-scores (alert snapshots need the score alone). The contributions
    are the same products, summed in the same order, less the zero terms (most of a new
    customer's): x + 0.0 is x, and the sign of a zero total is lost in the clamp."""
    plan = _plan(config)
    if plan is None:
        return 0.0
    view = _View(state, at, config)
    decayed, h, since_landmark = state.decayed, config.half_lives_s, at - state.landmark
    counts = state.counts
    # (sort key: larger effect first, then the name; the contribution)
    contributions: list[tuple[float, str, float]] = []
    for _, share, member_weight, members in plan:
        terms = []
        # The positive and the negative terms in order, for sum() (not a loop: sum() is
        # what engagement() uses, and how it adds floats depends on the Python version).
        positives, negatives = [], []
        for name, weight, saturation, feature in members:
            source = feature.decayed
            if source is None:
                needs = feature.needs
                if needs is not None:
                    where, key = needs
                    if where == "decayed":
                        present: object = decayed.get(key, 0.0)
                    elif where == "counts":
                        present = counts.get(key, 0)
                    else:
                        present = getattr(state, key)
                    if not present:
                        continue  # a zero term
                value = feature.value(view, saturation)
            else:
                # feature.value inlined: state.value, then _saturating, the same operations
                scaled = decayed.get(source, 0.0)
                if scaled == 0.0:
                    continue  # a zero term
                amount = _decayed(scaled, since_landmark, h[source])
                value = feature.sign * (1.0 - math.exp(-max(0.0, amount) / saturation))
            t = weight * value / member_weight
            if t > 0:
                positives.append(t)
            elif t < 0:
                negatives.append(t)
            elif t == 0.0:
                continue  # (not a NaN, which poisons the total as it does in engagement())
            terms.append((name, t))
        if not terms:
            continue
        positive = sum(positives)
        negative = -sum(negatives)
        scale = positive / negative if negative > positive else 1.0
        for name, t in terms:
            c = share * (t * scale if t < 0 else t)
            contributions.append((-abs(c), name, c))
    contributions.sort()
    return min(100.0, max(0.0, sum([c for _, _, c in contributions])))
