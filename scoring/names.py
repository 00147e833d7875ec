"""The names of the scoring core: decayed features, counters, alert kinds, tiers and the
features the engagement score can weigh. A leaf: it imports nothing of the project, so
every module may name them without importing what computes them.

They are also the fixed orders of the compact encoding (scoring/codec.py): append new
ones at the end, never reorder.
"""

from __future__ import annotations

from typing import Final

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
