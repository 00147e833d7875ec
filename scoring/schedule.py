"""The exact time of a silent customer's next inactivity check, computed fast.

``scoring.thresholds.next_check_at`` defines it: a bisection, to the minute, on the terms
of churn_risk that grow in silence (``scoring.scores.rising_terms``) plus the current
bad-experience term. The sweeper settles most due customers this way (their cheap lower
bound was reached and the exact time turns out later), at 18 evaluations of those terms
each, which made it the largest cost of a sweep. Here the bisection is the same one
(``thresholds.check_time``) as one loop over the few values it reads of the state, with
the terms computed inline and everything in them that does not depend on the time read
once; the values come from a state or, for the sweeper, from the fields of its stored
form that settling reads (``scoring.stored.check_inputs``), without decoding the rest.
Every floating-point operation is the one the definition does, in the same order, so the
time found is the same to the bit (tests/unit/scoring/test_scoring_schedule.py compares
the two, and each value of the terms, on simulated and arbitrary customers with and
without a BG/NBD fit).
"""

from __future__ import annotations

import math

from scoring.config import ScoringConfig
from scoring.features import ACTIVITY_LONG, ACTIVITY_SHORT, BAD_EXPERIENCES
from scoring.scores import open_tickets, recency_weight
from scoring.state import DAY_S, CustomerState
from scoring.stored import CheckInputs
from scoring.thresholds import _CHECK_RESOLUTION_S, next_check_at, threshold_of

_REFUSED = math.nan  # _search's answer where the BG/NBD model refuses the purchases


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
    decayed = state.decayed
    found = _search(
        state.churn_level,
        state.last_alert_at.get("churn_risk"),
        at,
        _bad_term(
            decayed.get(BAD_EXPERIENCES, 0.0), state.landmark, open_tickets(state), at, config
        ),
        state.last_seen,
        state.landmark,
        decayed.get(ACTIVITY_SHORT, 0.0),
        decayed.get(ACTIVITY_LONG, 0.0),
        state.purchase_days,
        state.first_purchase_day,
        state.last_purchase_day,
        config,
        trace,
    )
    if found != found:
        return next_check_at(state, at, config)  # which raises the model's error
    return found


def settled_check_at(inputs: CheckInputs, config: ScoringConfig) -> float | None:
    """``exact_check_at(state, state.evaluated_at, config)`` (what ``engine.settle``
    gives) for the state ``inputs`` were read from, bit for bit; NaN where the BG/NBD
    model refuses its purchases (t_x < 0): settling the decoded state says why."""
    i = inputs
    if i.churn_level >= 2:
        return None
    at = i.evaluated_at
    return _search(
        i.churn_level,
        i.churn_alert_at,
        at,
        _bad_term(i.bad, i.landmark, i.open_tickets, at, config),
        i.last_seen,
        i.landmark,
        i.short,
        i.long,
        i.purchase_days,
        i.first_purchase_day,
        i.last_purchase_day,
        config,
        None,
    )


def _bad_term(bad: float, landmark: float, tickets: int, at: float, config: ScoringConfig) -> float:
    """``thresholds._bad_term``: the weighted bad-experience term at ``at`` of a state whose
    decayed bad-experience sum is ``bad`` and which has ``tickets`` open tickets."""
    c = config.churn
    decayed = (
        0.0
        if bad == 0.0
        else bad * math.pow(2.0, -(at - landmark) / config.half_lives_s[BAD_EXPERIENCES])
    )
    load = decayed + c.open_ticket_weight * tickets
    return c.bad_experience_weight * (1.0 - math.exp(-load / c.bad_experience_saturation))


def _search(
    level: int,
    churn_alert_at: float | None,
    at: float,
    bad_now: float,
    last_seen: float,
    landmark: float,
    short_scaled: float,
    long_scaled: float,
    purchase_days: int,
    first_purchase_day: int,
    last_purchase_day: int,
    config: ScoringConfig,
    trace: list[tuple[float, float]] | None,
) -> float | None:
    """``thresholds.check_time`` on ``scores.rising_terms``, for a state of churn level
    ``level`` below 2, whose last churn alert was at ``churn_alert_at``, whose weighted
    bad-experience term at ``at`` is ``bad_now``, and with these decayed momentum sums
    (0.0 when absent) and purchases; NaN where the BG/NBD model refuses the purchases.
    The terms are inline (a call per evaluation cost a quarter of the search)."""
    c = config.churn
    t = c.thresholds
    # p_alive (scoring.model) when a fit applies to the customer: x, t_x and the parts of
    # the dropout odds that do not depend on the time
    params = config.model.bgnbd
    x = purchase_days - 1
    alive = params is not None and x > 0 and first_purchase_day >= 0
    unit = first = t_x = odds_base = exponent = alpha = log_alpha_t_x = 0.0
    if params is not None and alive:
        unit = params.time_unit_days * DAY_S
        first = first_purchase_day * DAY_S
        t_x = (last_purchase_day - first_purchase_day) * DAY_S / unit
        if not t_x >= 0:
            return _REFUSED
        odds_base = math.log(params.a) - math.log(params.b + x - 1)
        exponent = params.r + x
        alpha = params.alpha
        log_alpha_t_x = math.log(alpha + t_x)
    alive_w = c.alive_weight
    recency_w = recency_weight(config, 1.0 if alive else None)
    recency_days = c.recency_half_life_days
    # momentum: the short-horizon rate against the long one (scores.momentum)
    h, m = config.half_lives_s, config.momentum
    short_h, long_h = h[ACTIVITY_SHORT], h[ACTIVITY_LONG]
    short_days, long_days = m.short_half_life_days, m.long_half_life_days
    momentum_weight = c.momentum_weight
    # math.pow, math.log and math.exp are called by name, never through a local alias:
    # compiled, mypyc calls the C functions on unboxed floats only when it sees the name
    # (an alias is a Python call with boxed floats: 5.8 against 3.3 us a search, by
    # python -m benchmarks.sweep_cost --parts).

    # thresholds.check_time: the bounds, then rising(latest), rising(earliest) and the
    # bisection's midpoints, each compared with the target
    target = threshold_of(level + 1, t)
    earliest = at + _CHECK_RESOLUTION_S
    if churn_alert_at is not None and level == 0:
        earliest = max(earliest, churn_alert_at + t.cooldown_days * DAY_S)
    latest = at + t.max_check_interval_days * DAY_S
    if earliest >= latest:
        return earliest
    lo, hi = earliest, latest
    when, step = latest, 0  # step 0: at latest, 1: at earliest, 2: bisecting
    while True:
        # scores.rising_terms at ``when``. max() and min() keep their first argument
        # unless the next compares strictly greater (smaller): the conditionals repeat it.
        silence = when - last_seen
        silent_days = (silence if silence > 0.0 else 0.0) / DAY_S
        recency = 1.0 - math.pow(2.0, -silent_days / recency_days)
        falling = 0.0
        if long_scaled != 0.0:
            long = long_scaled * math.pow(2.0, -(when - landmark) / long_h)
            if not long <= 0.0:
                short = (
                    0.0
                    if short_scaled == 0.0
                    else short_scaled * math.pow(2.0, -(when - landmark) / short_h)
                )
                ratio = (short / short_days) / (long / long_days) - 1.0
                clipped = ratio if ratio < 1.0 else 1.0
                momentum = clipped if clipped > -1.0 else -1.0
                falling = -momentum if -momentum > 0.0 else 0.0
        if not alive:
            rising = recency_w * recency + 0.0 + momentum_weight * falling
        else:
            age = (when - first) / unit
            big_t = age if age > t_x else t_x
            log_odds = odds_base + exponent * (math.log(alpha + big_t) - log_alpha_t_x)
            if log_odds > 0:
                odds_inverse = math.exp(-log_odds)
                p_alive = odds_inverse / (1.0 + odds_inverse)
            else:
                p_alive = 1.0 / (1.0 + math.exp(log_odds))
            rising = recency_w * recency + alive_w * (1.0 - p_alive) + momentum_weight * falling
        if trace is not None:
            trace.append((when, rising))
        if step == 2:
            if rising + bad_now >= target:
                hi = when
            else:
                lo = when
        elif step == 0:
            if rising + bad_now < target:  # not ``not >=``: a NaN goes on, as there
                return latest
            when, step = earliest, 1
            continue
        elif rising + bad_now >= target:
            return earliest
        else:
            step = 2
        if not hi - lo > _CHECK_RESOLUTION_S:
            # Whole seconds, so the schedule and the alert times are exact in JSON and Redis.
            return float(int(hi) + 1)
        when = (lo + hi) / 2.0
