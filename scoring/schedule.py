"""The exact time of a silent customer's next inactivity check, computed fast.

``scoring.thresholds.next_check_at`` defines it: a bisection, to the minute, on the terms
of churn_risk that grow in silence (``scoring.scores.rising_terms``) plus the current
bad-experience term. The sweeper settles most due customers this way (their cheap lower
bound was reached and the exact time turns out later), at 18 evaluations of those terms
each, which made it the largest cost of a sweep. Here the bisection is the same one
(``thresholds.check_time``) and the terms are a function with everything that does not
depend on the time read once. Every floating-point operation is the one the definition
does, in the same order, so the time found is the same to the bit
(tests/unit/scoring/test_scoring_schedule.py compares the two, and each value of the
terms, on simulated customers with and without a BG/NBD fit).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from scoring.config import ScoringConfig
from scoring.features import ACTIVITY_LONG, ACTIVITY_SHORT
from scoring.scores import recency_weight
from scoring.state import DAY_S, CustomerState
from scoring.thresholds import check_time, next_check_at


def exact_check_at(
    state: CustomerState,
    at: float,
    config: ScoringConfig,
    trace: list[tuple[float, float]] | None = None,
) -> float | None:
    """``next_check_at(state, at, config)``, bit for bit; ``trace`` (for tests) receives
    each (time, rising_terms at that time) evaluated."""
    if state.churn_level >= 2:
        return None
    rising = rising_terms_of(state, config)
    if rising is None:
        return next_check_at(state, at, config)  # which raises the model's error
    if trace is not None:
        fast = rising

        def rising(when: float) -> float:
            value = fast(when)
            trace.append((when, value))
            return value

    return check_time(state, at, config, rising)


def rising_terms_of(state: CustomerState, config: ScoringConfig) -> Callable[[float], float] | None:
    """``lambda when: scores.rising_terms(state, when, config)``, with the per-customer
    constants computed once; None for a state the BG/NBD model refuses (t_x < 0)."""
    c = config.churn
    # p_alive (scoring.model) when a fit applies to the customer: x, t_x and the parts of
    # the dropout odds that do not depend on the time
    params = config.model.bgnbd
    x = state.purchase_days - 1
    alive = params is not None and x > 0 and state.first_purchase_day >= 0
    unit = first = t_x = odds_base = exponent = alpha = log_alpha_t_x = 0.0
    if params is not None and alive:
        unit = params.time_unit_days * DAY_S
        first = state.first_purchase_day * DAY_S
        t_x = (state.last_purchase_day - state.first_purchase_day) * DAY_S / unit
        if not t_x >= 0:
            return None
        odds_base = math.log(params.a) - math.log(params.b + x - 1)
        exponent = params.r + x
        alpha = params.alpha
        log_alpha_t_x = math.log(alpha + t_x)
    alive_w = c.alive_weight
    recency_w = recency_weight(config, 1.0 if alive else None)
    last_seen, recency_days = state.last_seen, c.recency_half_life_days
    # momentum: the short-horizon rate against the long one (scores.momentum)
    h, m = config.half_lives_s, config.momentum
    landmark = state.landmark
    short_scaled = state.decayed.get(ACTIVITY_SHORT, 0.0)
    long_scaled = state.decayed.get(ACTIVITY_LONG, 0.0)
    short_h, long_h = h[ACTIVITY_SHORT], h[ACTIVITY_LONG]
    short_days, long_days = m.short_half_life_days, m.long_half_life_days
    momentum_weight = c.momentum_weight
    pow2, log, exp = math.pow, math.log, math.exp

    def rising(when: float) -> float:
        # max() and min() keep their first argument unless the next compares strictly
        # greater (smaller): the conditionals repeat that.
        silence = when - last_seen
        silent_days = (silence if silence > 0.0 else 0.0) / DAY_S
        recency = 1.0 - pow2(2.0, -silent_days / recency_days)
        falling = 0.0
        if long_scaled != 0.0:
            long = long_scaled * pow2(2.0, -(when - landmark) / long_h)
            if not long <= 0.0:
                short = (
                    0.0
                    if short_scaled == 0.0
                    else short_scaled * pow2(2.0, -(when - landmark) / short_h)
                )
                ratio = (short / short_days) / (long / long_days) - 1.0
                clipped = ratio if ratio < 1.0 else 1.0
                momentum = clipped if clipped > -1.0 else -1.0
                falling = -momentum if -momentum > 0.0 else 0.0
        if not alive:
            return recency_w * recency + 0.0 + momentum_weight * falling
        age = (when - first) / unit
        big_t = age if age > t_x else t_x
        log_odds = odds_base + exponent * (log(alpha + big_t) - log_alpha_t_x)
        if log_odds > 0:
            odds_inverse = exp(-log_odds)
            p_alive = odds_inverse / (1.0 + odds_inverse)
        else:
            p_alive = 1.0 / (1.0 + exp(log_odds))
        return recency_w * recency + alive_w * (1.0 - p_alive) + momentum_weight * falling

    return rising
