"""Scores computed from a customer's state at a given time, each with its reasons.

Every function takes the clock value ``at`` as a parameter; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from schemas.alerts import Reason
from scoring.config import ScoringConfig
from scoring.engagement import engagement, engagement_score
from scoring.model import BgNbdParams, p_alive
from scoring.names import ACTIVITY_LONG, ACTIVITY_SHORT, BAD_EXPERIENCES
from scoring.state import DAY_S, CustomerState

# A reason's factor, detail and contribution (schemas.alerts.Reason's fields)
ReasonFields = tuple[str, str, float]

LEVEL_NAMES = {1: "elevated", 2: "high"}


def half_lives(config: ScoringConfig) -> Mapping[str, float]:
    """Half-life in seconds of every decayed feature."""
    return config.half_lives_s


def momentum(state: CustomerState, at: float, config: ScoringConfig) -> float:
    """-1..1: the short-horizon activity rate against the long-horizon one, minus one.

    Negative means the customer is sliding from their own usual level, whatever it is.
    """
    m = config.momentum
    h = config.half_lives_s
    short = state.value(ACTIVITY_SHORT, h[ACTIVITY_SHORT], at)
    long = state.value(ACTIVITY_LONG, h[ACTIVITY_LONG], at)
    if long <= 0.0:
        return 0.0
    # A decayed sum with half-life h estimates rate * h / ln 2, so compare rates.
    ratio = (short / m.short_half_life_days) / (long / m.long_half_life_days)
    return max(-1.0, min(1.0, ratio - 1.0))


@dataclass(frozen=True, slots=True)
class AliveInputs:
    """BG/NBD's view of a customer: x repeat purchase days, t_x and T in model periods,
    measured from the start of the first purchase day (UTC)."""

    params: BgNbdParams
    x: int
    t_x: float
    T: float
    first_purchase_at: float


def alive_inputs(state: CustomerState, at: float, config: ScoringConfig) -> AliveInputs | None:
    """None before a fit, or before the customer's second purchase day (BG/NBD says 1.0
    for them, which says nothing: the recency of activity speaks instead)."""
    params = config.model.bgnbd
    x = state.purchase_days - 1
    if params is None or x <= 0 or state.first_purchase_day < 0:
        return None
    unit = params.time_unit_days * DAY_S
    first = state.first_purchase_day * DAY_S
    t_x = (state.last_purchase_day - state.first_purchase_day) * DAY_S / unit
    return AliveInputs(params, x, t_x, max(t_x, (at - first) / unit), first)


def alive_probability(state: CustomerState, at: float, config: ScoringConfig) -> float | None:
    inputs = alive_inputs(state, at, config)
    if inputs is None:
        return None
    return p_alive(inputs.params, inputs.x, inputs.t_x, inputs.T)


@dataclass(frozen=True, slots=True)
class ChurnAssessment:
    churn_risk: float
    recency: float
    p_alive: float | None
    falling_momentum: float
    bad_experiences: float
    reasons: tuple[Reason, ...]


def _recency(state: CustomerState, at: float, config: ScoringConfig) -> float:
    silent_days = max(0.0, at - state.last_seen) / DAY_S
    return 1.0 - math.pow(2.0, -silent_days / config.churn.recency_half_life_days)


def open_tickets(state: CustomerState) -> int:
    return max(0, state.count("tickets_opened") - state.count("tickets_resolved"))


def bad_experience_term(state: CustomerState, at: float, config: ScoringConfig) -> float:
    """0..1: recent bad experiences (decayed) and unresolved support tickets (not)."""
    c = config.churn
    decayed = state.value(BAD_EXPERIENCES, config.half_lives_s[BAD_EXPERIENCES], at)
    load = decayed + c.open_ticket_weight * open_tickets(state)
    return 1.0 - math.exp(-load / c.bad_experience_saturation)


def recency_weight(config: ScoringConfig, alive: float | None) -> float:
    """The recency term's weight: it takes the p_alive weight when p_alive is unknown."""
    c = config.churn
    return c.recency_weight + (c.alive_weight if alive is None else 0.0)


def rising_terms(state: CustomerState, at: float, config: ScoringConfig) -> float:
    """The part of churn_risk that only grows while a customer is silent."""
    c = config.churn
    alive = alive_probability(state, at, config)
    dormant = 0.0 if alive is None else c.alive_weight * (1.0 - alive)
    return (
        recency_weight(config, alive) * _recency(state, at, config)
        + dormant
        + c.momentum_weight * max(0.0, -momentum(state, at, config))
    )


def churn_value(state: CustomerState, at: float, config: ScoringConfig) -> float:
    """churn_risk alone, without building its reasons: the definition by its terms.

    Fast twins, each written out again because a profile of the event path or the sweep
    demanded it, and each held to this definition to the bit by a test: ``churn_terms``
    (every evaluation; test_scoring_scores.py), ``_reasons`` (an alert's risk from its
    reasons; test_scoring_scores.py), ``schedule._search`` and ``schedule._bad_term`` (the
    sweep's settling; test_scoring_schedule.py). A change here changes them too."""
    risk = rising_terms(state, at, config) + config.churn.bad_experience_weight * (
        bad_experience_term(state, at, config)
    )
    return min(1.0, max(0.0, risk))


class ChurnTerms(NamedTuple):
    """What one evaluation computes of churn_risk, for the schedule and an alert's reasons
    to reuse: ``churn_value``, ``bad_experience_term`` and ``alive_inputs`` at the same
    time, and the parts ``churn_risk`` reports (a named tuple: one is made per
    evaluation, a frozen dataclass costs twice as much)."""

    risk: float
    bad_experiences: float
    alive: AliveInputs | None
    recency: float
    p_alive: float | None
    falling_momentum: float
    silent_days: float
    open_tickets: int


class ReasonTerms(NamedTuple):
    """What a churn risk's reasons say: its terms, the days of silence and the open
    tickets."""

    recency: float
    p_alive: float | None
    falling_momentum: float
    bad_experiences: float
    silent_days: float
    open_tickets: int


def churn_terms(state: CustomerState, at: float, config: ScoringConfig) -> ChurnTerms:
    """``churn_value`` with the terms it is made of, each computed once: every operation
    the per-term functions do, in the same order, so the values are the same to the bit
    (tests/unit/scoring/test_scoring_scores.py)."""
    c = config.churn
    h = config.half_lives_s
    # state.value, inlined: three decayed values are read for every evaluation
    decayed, since_landmark = state.decayed, at - state.landmark
    inputs = None if config.model.bgnbd is None else alive_inputs(state, at, config)
    alive = None if inputs is None else p_alive(inputs.params, inputs.x, inputs.t_x, inputs.T)
    dormant = 0.0 if alive is None else c.alive_weight * (1.0 - alive)
    # max() and min() keep their first argument unless the next compares strictly greater
    # (smaller): the conditionals below repeat that (as scoring/schedule.py does).
    silence = at - state.last_seen
    silent_days = (silence if silence > 0.0 else 0.0) / DAY_S
    recency = 1.0 - math.pow(2.0, -silent_days / c.recency_half_life_days)
    scaled = decayed.get(ACTIVITY_LONG, 0.0)
    long = 0.0 if scaled == 0.0 else scaled * math.pow(2.0, -since_landmark / h[ACTIVITY_LONG])
    falling = 0.0  # momentum is 0 without a long-horizon level
    if not long <= 0.0:
        m = config.momentum
        scaled = decayed.get(ACTIVITY_SHORT, 0.0)
        short = (
            0.0 if scaled == 0.0 else scaled * math.pow(2.0, -since_landmark / h[ACTIVITY_SHORT])
        )
        ratio = (short / m.short_half_life_days) / (long / m.long_half_life_days)
        clipped = ratio - 1.0 if ratio - 1.0 < 1.0 else 1.0
        momentum = clipped if clipped > -1.0 else -1.0
        falling = -momentum if -momentum > 0.0 else 0.0
    rising = (
        (c.recency_weight + (c.alive_weight if alive is None else 0.0)) * recency
        + dormant
        + c.momentum_weight * falling
    )
    scaled = decayed.get(BAD_EXPERIENCES, 0.0)
    bad_decayed = (
        0.0 if scaled == 0.0 else scaled * math.pow(2.0, -since_landmark / h[BAD_EXPERIENCES])
    )
    counts = state.counts
    tickets = counts.get("tickets_opened", 0) - counts.get("tickets_resolved", 0)
    tickets = tickets if tickets > 0 else 0
    load = bad_decayed + c.open_ticket_weight * tickets
    bad = 1.0 - math.exp(-load / c.bad_experience_saturation)
    risk = rising + c.bad_experience_weight * bad
    floored = risk if risk > 0.0 else 0.0
    return ChurnTerms(
        floored if floored < 1.0 else 1.0,
        bad,
        inputs,
        recency,
        alive,
        falling,
        silent_days,
        tickets,
    )


def churn_risk(state: CustomerState, at: float, config: ScoringConfig) -> ChurnAssessment:
    terms = ReasonTerms(
        _recency(state, at, config),
        alive_probability(state, at, config),
        max(0.0, -momentum(state, at, config)),
        bad_experience_term(state, at, config),
        max(0.0, at - state.last_seen) / DAY_S,
        open_tickets(state),
    )
    risk, reasons = _reasons(state, at, config, terms)
    return ChurnAssessment(
        churn_risk=risk,
        recency=terms.recency,
        p_alive=terms.p_alive,
        falling_momentum=terms.falling_momentum,
        bad_experiences=terms.bad_experiences,
        reasons=tuple(Reason(factor=f, detail=d, contribution=c) for f, d, c in reasons),
    )


def churn_reasons(
    state: CustomerState, at: float, config: ScoringConfig, terms: ChurnTerms
) -> tuple[float, list[ReasonFields]]:
    """``churn_risk(state, at, config)``'s churn risk and reasons to the bit, from the
    state's ``churn_terms`` at ``at``, which the evaluation computed already, each reason
    as its fields: an alert validates them with itself, in one call (a ``Reason`` made
    apart costs as much as the validation of four: BENCHMARKS.md, Sweep)."""
    return _reasons(
        state,
        at,
        config,
        ReasonTerms(
            terms.recency,
            terms.p_alive,
            terms.falling_momentum,
            terms.bad_experiences,
            terms.silent_days,
            terms.open_tickets,
        ),
    )


def _reasons(
    state: CustomerState, at: float, config: ScoringConfig, terms: ReasonTerms
) -> tuple[float, list[ReasonFields]]:
    """The churn risk (0..1) and its reasons, the largest contribution first."""
    c = config.churn
    recency, alive, falling, bad, silent_days, tickets = terms
    reasons: list[ReasonFields] = [
        (
            "recency",
            f"no activity for {silent_days:.1f} days",
            recency_weight(config, alive) * recency,
        ),
        (
            "momentum",
            f"activity {100 * falling:.0f}% below the customer's usual rate",
            c.momentum_weight * falling,
        ),
        (
            "bad_experiences",
            f"recent bad experiences and {tickets} open tickets weigh {bad:.2f} of the maximum",
            c.bad_experience_weight * bad,
        ),
    ]
    if alive is not None:
        # p_alive is known once the customer has repeat purchase days (alive_inputs' x)
        repeat_days = state.purchase_days - 1
        since = (at - state.last_purchase_day * DAY_S) / DAY_S
        reasons.append(
            (
                "p_alive",
                f"probability still a customer {alive:.2f} (BG/NBD: {repeat_days} repeat "
                f"purchase days, the last {since:.0f} days ago)",
                c.alive_weight * (1.0 - alive),
            )
        )
    risk = sum(r[2] for r in reasons)
    return min(1.0, max(0.0, risk)), sorted(reasons, key=lambda r: -r[2])


__all__ = [
    "LEVEL_NAMES",
    "AliveInputs",
    "ChurnAssessment",
    "ChurnTerms",
    "alive_inputs",
    "alive_probability",
    "churn_reasons",
    "churn_risk",
    "churn_terms",
    "churn_value",
    "engagement",
    "engagement_score",
    "half_lives",
    "momentum",
    "rising_terms",
]
