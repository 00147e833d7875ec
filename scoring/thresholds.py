"""Threshold crossing with hysteresis and cooldown, and when to look at a silent customer.

A level fires once when churn_risk rises to it, then stays armed-off until the risk falls
below the level's threshold minus the margin: a customer hovering around a threshold gets
one alert per crossing, not one per event.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from scoring.config import ChurnThresholds, ScoringConfig
from scoring.scores import (
    ChurnTerms,
    alive_inputs,
    bad_experience_term,
    recency_weight,
    rising_terms,
)
from scoring.state import DAY_S, CustomerState

_CHECK_RESOLUTION_S: Final = 60.0


def threshold_of(level: int, thresholds: ChurnThresholds) -> float:
    return thresholds.high if level >= 2 else thresholds.elevated


def level_of(risk: float, thresholds: ChurnThresholds) -> int:
    if risk >= thresholds.high:
        return 2
    if risk >= thresholds.elevated:
        return 1
    return 0


@dataclass(frozen=True, slots=True)
class ChurnDecision:
    armed_level: int
    alert_level: int | None


def decide_churn(
    armed_level: int,
    risk: float,
    last_alert_at: float | None,
    at: float,
    thresholds: ChurnThresholds,
) -> ChurnDecision:
    level = armed_level
    while level > 0 and risk < threshold_of(level, thresholds) - thresholds.margin:
        level -= 1
    current = level_of(risk, thresholds)
    # The cooldown holds back a re-armed customer crossing again, not an escalation from
    # elevated to high, which is news.
    cooled = (
        level > 0 or last_alert_at is None or at - last_alert_at >= thresholds.cooldown_days * DAY_S
    )
    if current > level and cooled:
        return _DECISIONS[current, current]
    return _DECISIONS.get((level, None)) or ChurnDecision(armed_level=level, alert_level=None)


# Every decision there can be (levels 0-2), made once: one is needed per evaluation.
_DECISIONS = {
    (armed, alert): ChurnDecision(armed_level=armed, alert_level=alert)
    for armed in range(3)
    for alert in (None, 1, 2)
}


def earliest_check_at(
    state: CustomerState,
    at: float,
    config: ScoringConfig,
    level: int | None = None,
    last_churn_alert: float | None = None,
    terms: ChurnTerms | None = None,
) -> float | None:
    """A lower bound of ``next_check_at``, in closed form: cheap enough for every event.

    Falling momentum adds at most its weight, so the risk cannot reach the next level
    before the terms that grow in silence -- recency, and 1 - p_alive once BG/NBD applies
    -- make up the rest. Those two weigh w_r + w_a together: they cannot reach a share f
    of that before one of them alone reaches f, so the earlier of the two times at which
    each alone does is a lower bound. For an active customer it is days away, and the
    exact bisection is only needed if an event or the sweeper gets there. ``terms``: the
    state's own ``churn_terms`` at ``at``, when the caller has them.
    """
    t = config.churn.thresholds
    # ``level`` and ``last_churn_alert`` stand for the state's own when it is about to get
    # them, so the caller can copy the state once.
    if level is None:
        level, last_churn_alert = state.churn_level, state.last_alert_at.get("churn_risk")
    if level >= 2:
        return None
    c = config.churn
    earliest = at + _CHECK_RESOLUTION_S
    if last_churn_alert is not None and level == 0:
        earliest = max(earliest, last_churn_alert + t.cooldown_days * DAY_S)
    latest = at + t.max_check_interval_days * DAY_S
    if terms is None:
        bad, inputs = bad_experience_term(state, at, config), alive_inputs(state, at, config)
    else:
        bad, inputs = terms.bad_experiences, terms.alive
    needed = threshold_of(level + 1, t) - c.momentum_weight - c.bad_experience_weight * bad
    w_recency = recency_weight(config, None if inputs is None else 1.0)
    w_alive = 0.0 if inputs is None else c.alive_weight
    if needed <= 0.0:
        return min(earliest, latest)
    if w_recency + w_alive <= 0.0:
        return max(earliest, latest) if earliest >= latest else latest
    share = needed / (w_recency + w_alive)
    if share >= 1.0:
        return max(earliest, latest) if earliest >= latest else latest
    crossing = math.inf
    if w_recency > 0.0:
        # 1 - 2**(-silence / h) >= share  <=>  silence >= -h * log2(1 - share); silence
        # counts from the last event, which is never after ``at``.
        silence = -c.recency_half_life_days * DAY_S * math.log2(1.0 - share)
        crossing = state.last_seen + silence
    if inputs is not None and w_alive > 0.0:
        # 1 - p_alive >= share  <=>  dropout odds >= share / (1 - share), and the odds are
        # a/(b+x-1) * ((alpha+T)/(alpha+t_x))**(r+x): solve for T.
        p = inputs.params
        log_ratio = (
            math.log(share / (1.0 - share)) - math.log(p.a) + math.log(p.b + inputs.x - 1)
        ) / (p.r + inputs.x)
        big_t = (p.alpha + inputs.t_x) * math.exp(min(log_ratio, 700.0)) - p.alpha
        unit = p.time_unit_days * DAY_S
        crossing = min(crossing, inputs.first_purchase_at + max(big_t, inputs.t_x) * unit)
    if crossing == math.inf:
        return max(earliest, latest) if earliest >= latest else latest
    # min(max(earliest, crossing), max(earliest, latest)), run for every event: max and
    # min keep their first argument unless the next compares strictly greater (smaller).
    due = crossing if crossing > earliest else earliest
    bound = latest if latest > earliest else earliest
    return bound if bound < due else due


def _bad_term(state: CustomerState, at: float, config: ScoringConfig) -> float:
    return config.churn.bad_experience_weight * bad_experience_term(state, at, config)


def next_check_at(state: CustomerState, at: float, config: ScoringConfig) -> float | None:
    """The earliest time at which, with no new event, the next churn level could fire.

    Only recency and falling momentum grow during silence; bad experiences fade. Holding
    the bad-experience term at its current value gives an upper bound of the risk, so the
    time found is never later than the real crossing; a check that comes early simply
    schedules the next one. The search is a bisection to one minute: deterministic, so
    inactivity alerts do not depend on when the sweeper happens to run.
    """
    return check_time(state, at, config, lambda when: rising_terms(state, when, config))


def check_time(
    state: CustomerState, at: float, config: ScoringConfig, rising: Callable[[float], float]
) -> float | None:
    """:func:`next_check_at`'s search, on ``rising``: ``rising_terms`` of the state at a
    time, or a function equal to it to the bit (the sweeper's, scoring/schedule.py)."""
    t = config.churn.thresholds
    if state.churn_level >= 2:
        return None
    target = threshold_of(state.churn_level + 1, t)
    bad_now = _bad_term(state, at, config)
    earliest = at + _CHECK_RESOLUTION_S
    cooldown_end = state.last_alert_at.get("churn_risk")
    if cooldown_end is not None and state.churn_level == 0:
        earliest = max(earliest, cooldown_end + t.cooldown_days * DAY_S)
    latest = at + t.max_check_interval_days * DAY_S
    if earliest >= latest:
        return earliest
    if rising(latest) + bad_now < target:
        return latest
    if rising(earliest) + bad_now >= target:
        return earliest
    lo, hi = earliest, latest
    while hi - lo > _CHECK_RESOLUTION_S:
        mid = (lo + hi) / 2.0
        if rising(mid) + bad_now >= target:
            hi = mid
        else:
            lo = mid
    # Whole seconds, so the schedule and the alert times are exact in JSON and Redis.
    return float(int(hi) + 1)
