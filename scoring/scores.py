"""Scores computed from a customer's state at a given time, each with its reasons.

Every function takes the clock value ``at`` as a parameter; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.alerts import Reason
from scoring.config import ScoringConfig
from scoring.state import DAY_S, CustomerState

# Decayed features and the config entry giving each one's half-life.
ENGAGEMENT = "eng"
ACTIVITY_SHORT = "short"
ACTIVITY_LONG = "long"
BAD_EXPERIENCES = "bad"

LEVEL_NAMES = {1: "elevated", 2: "high"}


def half_lives(config: ScoringConfig) -> Mapping[str, float]:
    """Half-life in seconds of every decayed feature."""
    return {
        ENGAGEMENT: config.engagement.half_life_days * DAY_S,
        ACTIVITY_SHORT: config.momentum.short_half_life_days * DAY_S,
        ACTIVITY_LONG: config.momentum.long_half_life_days * DAY_S,
        BAD_EXPERIENCES: config.churn.bad_experience_half_life_days * DAY_S,
    }


def engagement_score(state: CustomerState, at: float, config: ScoringConfig) -> float:
    """0..100: decayed weighted activity, saturating so no burst can exceed 100."""
    activity = state.value(ENGAGEMENT, config.engagement.half_life_days * DAY_S, at)
    return 100.0 * (1.0 - math.exp(-activity / config.engagement.saturation))


def momentum(state: CustomerState, at: float, config: ScoringConfig) -> float:
    """-1..1: the short-horizon activity rate against the long-horizon one, minus one.

    Negative means the customer is sliding from their own usual level, whatever it is.
    """
    m = config.momentum
    short = state.value(ACTIVITY_SHORT, m.short_half_life_days * DAY_S, at)
    long = state.value(ACTIVITY_LONG, m.long_half_life_days * DAY_S, at)
    if long <= 0.0:
        return 0.0
    # A decayed sum with half-life h estimates rate * h / ln 2, so compare rates.
    ratio = (short / m.short_half_life_days) / (long / m.long_half_life_days)
    return max(-1.0, min(1.0, ratio - 1.0))


@dataclass(frozen=True, slots=True)
class ChurnAssessment:
    churn_risk: float
    recency: float
    falling_momentum: float
    bad_experiences: float
    reasons: tuple[Reason, ...]


def _recency(state: CustomerState, at: float, config: ScoringConfig) -> float:
    silent_days = max(0.0, at - state.last_seen) / DAY_S
    return 1.0 - math.pow(2.0, -silent_days / config.churn.recency_half_life_days)


def _bad_experiences(state: CustomerState, at: float, config: ScoringConfig) -> float:
    c = config.churn
    decayed = state.value(BAD_EXPERIENCES, c.bad_experience_half_life_days * DAY_S, at)
    return 1.0 - math.exp(-decayed / c.bad_experience_saturation)


def rising_terms(state: CustomerState, at: float, config: ScoringConfig) -> float:
    """The part of churn_risk that only grows while a customer is silent."""
    c = config.churn
    return c.recency_weight * _recency(state, at, config) + c.momentum_weight * max(
        0.0, -momentum(state, at, config)
    )


def churn_risk(state: CustomerState, at: float, config: ScoringConfig) -> ChurnAssessment:
    c = config.churn
    recency = _recency(state, at, config)
    falling = max(0.0, -momentum(state, at, config))
    bad = _bad_experiences(state, at, config)
    silent_days = max(0.0, at - state.last_seen) / DAY_S
    reasons = (
        Reason(
            factor="recency",
            detail=f"no activity for {silent_days:.1f} days",
            contribution=c.recency_weight * recency,
        ),
        Reason(
            factor="momentum",
            detail=f"activity {100 * falling:.0f}% below the customer's usual rate",
            contribution=c.momentum_weight * falling,
        ),
        Reason(
            factor="bad_experiences",
            detail=f"recent bad experiences weigh {bad:.2f} of the maximum",
            contribution=c.bad_experience_weight * bad,
        ),
    )
    risk = sum(r.contribution for r in reasons)
    return ChurnAssessment(
        churn_risk=min(1.0, max(0.0, risk)),
        recency=recency,
        falling_momentum=falling,
        bad_experiences=bad,
        reasons=tuple(sorted(reasons, key=lambda r: -r.contribution)),
    )
