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

from schemas.alerts import Reason
from scoring.config import SUBSCORES, FeatureWeight, ScoringConfig, Subscore
from scoring.features import BAD_EXPERIENCES
from scoring.state import CustomerState, distinct_estimate

Term = tuple[float, str]


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
        self.cache: dict[str, float] = {}

    def v(self, name: str) -> float:
        value = self.cache.get(name)
        if value is None:
            value = self.cache[name] = self.state.value(name, self.h[name], self.at)
        return value

    def per_session(self, name: str) -> float:
        sessions = self.v("sessions")
        return self.v(name) / sessions if sessions > 0 else 0.0


def _amount(name: str, what: str, sign: float = 1.0) -> Callable[[_View, float], Term]:
    def term(view: _View, saturation: float) -> Term:
        value = view.v(name)
        return sign * _saturating(value, saturation), f"{value:.1f} {what} (decayed)"

    return term


def _distinct(bitmap: Callable[[CustomerState], int], what: str) -> Callable[[_View, float], Term]:
    def term(view: _View, saturation: float) -> Term:
        n = distinct_estimate(bitmap(view.state))
        return _saturating(n, saturation), f"about {n:.0f} distinct {what}"

    return term


def _pages_per_session(view: _View, saturation: float) -> Term:
    pages = view.per_session("hits")
    return _saturating(pages, saturation), f"{pages:.1f} pages per session"


def _conversion_rate(view: _View, _: float) -> Term:
    rate = min(1.0, max(0.0, view.per_session("conversions")))
    return rate, f"{100 * rate:.0f}% of recent sessions ended in an order"


def _bounce_rate(view: _View, _: float) -> Term:
    rate = min(1.0, max(0.0, view.per_session("bounces")))
    return -rate, f"{100 * rate:.0f}% of recent sessions were single-page"


def _open_tickets(view: _View, saturation: float) -> Term:
    s = view.state
    open_ = max(0, s.count("tickets_opened") - s.count("tickets_resolved"))
    return -_saturating(open_, saturation), f"{open_} support tickets open"


def _support_hours(total: str, n: str, what: str) -> Callable[[_View, float], Term]:
    def term(view: _View, saturation: float) -> Term:
        answered = view.state.count(n)
        if not answered:
            return 0.0, f"no {what} measured"
        hours = view.state.count(total) / answered / 3_600.0
        return -_saturating(hours, saturation), f"{what} {hours:.1f} h on average"

    return term


def _average(
    total: str, n: str, scale: tuple[float, float, float], what: str
) -> Callable[[_View, float], Term]:
    def term(view: _View, _: float) -> Term:
        answers = view.state.count(n)
        if not answers:
            return 0.0, f"no {what}"
        mean = view.state.count(total) / answers
        return _level(mean, *scale), f"average {what} {mean:.1f} ({answers} answers)"

    return term


def _last_nps(view: _View, _: float) -> Term:
    last = view.state.last_nps
    if last < 0:
        return 0.0, "no NPS answer"
    return _level(last, 0.0, 7.0, 10.0), f"last NPS answer {last}"


def _sentiment(view: _View, _: float) -> Term:
    n = view.v("sentiment_n")
    if n <= 0:
        return 0.0, "no sentiment measured"
    mean = max(-1.0, min(1.0, view.v("sentiment") / n))
    return mean, f"feedback sentiment {mean:+.2f} (decayed mean)"


def _returns_share(view: _View, _: float) -> Term:
    s = view.state
    orders = s.count("orders")
    share = min(1.0, s.count("returns") / orders) if orders else 0.0
    return -share, f"{s.count('returns')} returns or refunds for {orders} orders"


def _bad_experiences(view: _View, saturation: float) -> Term:
    value = view.v(BAD_EXPERIENCES)
    return -_saturating(value, saturation), f"{value:.1f} bad experiences (decayed)"


FEATURES: dict[str, Callable[[_View, float], Term]] = {
    "product_views": _amount("product_views", "product views"),
    "add_to_cart": _amount("carts", "add-to-carts"),
    "searches": _amount("searches", "searches"),
    "product_variety": _distinct(lambda s: s.items_seen, "products viewed"),
    "visits": _amount("sessions", "sessions"),
    "pages_per_session": _pages_per_session,
    "time_on_site": _amount("minutes", "minutes on site"),
    "conversion_rate": _conversion_rate,
    "bounce_rate": _bounce_rate,
    "bad_experiences": _bad_experiences,
    "open_tickets": _open_tickets,
    "response_time": _support_hours("response_s", "responses", "first response"),
    "resolution_time": _support_hours("resolution_s", "resolutions", "resolution"),
    "nps": _average("nps_sum", "nps_answers", (0.0, 7.0, 10.0), "NPS"),
    "last_nps": _last_nps,
    "csat": _average("csat_sum", "csat_answers", (1.0, 3.0, 5.0), "CSAT"),
    "review_rating": _average("rating_sum", "reviews", (1.0, 3.0, 5.0), "review rating"),
    "sentiment": _sentiment,
    "shares": _amount("shares", "shares"),
    "reviews": _amount("reviews", "reviews"),
    "referrals": _amount("referrals", "referrals"),
    "purchase_frequency": _amount("orders", "orders"),
    "spend": _amount("spend", "spent"),
    "category_variety": _distinct(lambda s: s.categories, "categories bought"),
    "returns_share": _returns_share,
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


def engagement(state: CustomerState, at: float, config: ScoringConfig) -> Engagement:
    e = config.engagement
    view = _View(state, at, config)
    by_subscore: dict[Subscore, list[tuple[str, FeatureWeight]]] = {}
    for name, fw in e.features.items():
        if fw.weight > 0:
            by_subscore.setdefault(fw.subscore, []).append((name, fw))
    weights = {k: e.subscores.get(k, 0.0) for k in SUBSCORES if k in by_subscore}
    total_weight = sum(weights.values())
    subscores: dict[str, float] = dict.fromkeys(SUBSCORES, 0.0)
    contributions: list[tuple[str, str, str, float]] = []
    if total_weight <= 0:
        return Engagement(0.0, subscores, ())
    for sub, members in by_subscore.items():
        share = 100.0 * weights[sub] / total_weight
        member_weight = sum(fw.weight for _, fw in members)
        terms = []
        for name, fw in members:
            value, detail = FEATURES[name](view, fw.saturation)
            terms.append((name, detail, fw.weight * value / member_weight))
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
    """0..100 (see the module docstring)."""
    return engagement(state, at, config).score
