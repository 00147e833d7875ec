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
from typing import Final

from scoring.codec import _F_EXACT, with_exact_check
from scoring.config import ScoringConfig
from scoring.names import ACTIVITY_LONG, ACTIVITY_SHORT, BAD_EXPERIENCES
from scoring.scores import open_tickets, recency_weight
from scoring.state import DAY_S, CustomerState
from scoring.stored import CheckInputs, Fields, stored_fields
from scoring.thresholds import _CHECK_RESOLUTION_S, next_check_at, threshold_of

_REFUSED: Final = math.nan  # _search's answer where the BG/NBD model refuses the purchases


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
    k = _constants(config)
    found = _search(
        state.churn_level,
        state.last_alert_at.get("churn_risk"),
        at,
        _bad_term(decayed.get(BAD_EXPERIENCES, 0.0), state.landmark, open_tickets(state), at, k),
        state.last_seen,
        state.landmark,
        decayed.get(ACTIVITY_SHORT, 0.0),
        decayed.get(ACTIVITY_LONG, 0.0),
        state.purchase_days,
        state.first_purchase_day,
        state.last_purchase_day,
        k,
        trace,
    )
    if found != found:
        return next_check_at(state, at, config)  # which raises the model's error
    return found


def settled_check_at(inputs: CheckInputs, config: ScoringConfig) -> float | None:
    """``exact_check_at(state, state.evaluated_at, config)`` (what ``engine.settle``
    gives) for the state ``inputs`` were read from, bit for bit; NaN where the BG/NBD
    model refuses its purchases (t_x < 0): settling the decoded state says why."""
    return _settled(inputs, _constants(config))


def _settled(fields: Fields, k: _Constants) -> float | None:
    """``settled_check_at`` on the fields as ``stored.stored_fields`` reads them."""
    (level, _, _, at, landmark, last_seen, short, long, bad, tickets,
     churn_alert_at, days, first, last) = fields  # fmt: skip
    if level >= 2:
        return None
    return _search(
        level, churn_alert_at, at, _bad_term(bad, landmark, tickets, at, k), last_seen,
        landmark, short, long, days, first, last, k, None,
    )  # fmt: skip


def settle_stored(
    blobs: dict[str, bytes], now: float, config: ScoringConfig
) -> tuple[dict[str, tuple[bytes, float | None]], dict[str, float | None]]:
    """The sweeper's first step, on one shard's due customers as stored (``blobs``), in
    one compiled loop (most of them end here): those whose stored check time is a lower
    bound due by ``now`` and whose exact one (``settled_check_at``) is later, or none,
    as (the blob with that time, ``codec.with_exact_check``, and the time); every other
    customer, in the order of ``blobs``, with the exact time found for them (due by
    ``now``) or NaN where it was not found here (an exact check time already, not due, a
    blob ``check_inputs`` does not read, or purchases the model refuses): they are
    decoded, and ``engine.sweep_due`` runs on them."""
    k = _constants(config)
    settled: dict[str, tuple[bytes, float | None]] = {}
    rest: dict[str, float | None] = {}
    for customer_id, raw in blobs.items():
        exact: float | None = _REFUSED
        # The header's flags first: a customer with an exact check time is evaluated,
        # nothing of the blob is read here.
        fields = None if len(raw) < 2 or raw[1] & _F_EXACT else stored_fields(raw)
        if fields is not None and (due := fields[1]) is not None and due <= now:
            exact = _settled(fields, k)
            if exact is None or exact > now:
                patched = with_exact_check(raw, exact)
                if patched is not None:  # always: stored_fields reads the compact form
                    settled[customer_id] = (patched, exact)
                    continue
        rest[customer_id] = exact
    return settled, rest


def _bad_term(bad: float, landmark: float, tickets: int, at: float, k: _Constants) -> float:
    """``thresholds._bad_term``: the weighted bad-experience term at ``at`` of a state whose
    decayed bad-experience sum is ``bad`` and which has ``tickets`` open tickets."""
    decayed = 0.0 if bad == 0.0 else bad * math.pow(2.0, -(at - landmark) / k.bad_h)
    load = decayed + k.ticket_weight * tickets
    return k.bad_weight * (1.0 - math.exp(-load / k.bad_saturation))


class _Constants:
    """What the search and the bad-experience term read of a config, read once per
    config: compiled, these are plain fields of a native object, where each read of a
    pydantic model's attribute was a dictionary lookup (about a sixth of a settling).
    Each value is the one the definition computes, by the same operations."""

    def __init__(self, config: ScoringConfig) -> None:
        c, h, m = config.churn, config.half_lives_s, config.momentum
        t = c.thresholds
        params = config.model.bgnbd
        self.fitted: bool = params is not None
        # BG/NBD's constant parts (when fitted): its time unit in seconds and log(a)
        self.unit: float = 0.0 if params is None else params.time_unit_days * DAY_S
        self.log_a: float = 0.0 if params is None else math.log(params.a)
        self.b: float = 0.0 if params is None else params.b
        self.r: float = 0.0 if params is None else params.r
        self.alpha: float = 0.0 if params is None else params.alpha
        self.alive_weight: float = c.alive_weight
        # the recency term's weight with p_alive known, and without (it takes p_alive's)
        self.recency_weight_alive: float = recency_weight(config, 1.0)
        self.recency_weight_unknown: float = recency_weight(config, None)
        self.recency_days: float = c.recency_half_life_days
        self.short_h: float = h[ACTIVITY_SHORT]
        self.long_h: float = h[ACTIVITY_LONG]
        self.short_days: float = m.short_half_life_days
        self.long_days: float = m.long_half_life_days
        self.momentum_weight: float = c.momentum_weight
        # the next level's threshold from levels 0 and 1
        self.target_elevated: float = threshold_of(1, t)
        self.target_high: float = threshold_of(2, t)
        self.cooldown_s: float = t.cooldown_days * DAY_S
        self.max_interval_s: float = t.max_check_interval_days * DAY_S
        self.bad_h: float = h[BAD_EXPERIENCES]
        self.ticket_weight: float = c.open_ticket_weight
        self.bad_saturation: float = c.bad_experience_saturation
        self.bad_weight: float = c.bad_experience_weight


_CONSTANTS: dict[int, tuple[ScoringConfig, _Constants]] = {}


def _constants(config: ScoringConfig) -> _Constants:
    """Keyed by identity; the entry holds the config, so its id is not reused meanwhile."""
    cached = _CONSTANTS.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    if len(_CONSTANTS) >= 64:
        _CONSTANTS.clear()
    k = _Constants(config)
    _CONSTANTS[id(config)] = (config, k)
    return k


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
    k: _Constants,
    trace: list[tuple[float, float]] | None,
) -> float | None:
    """``thresholds.check_time`` on ``scores.rising_terms``, for a state of churn level
    ``level`` below 2, whose last churn alert was at ``churn_alert_at``, whose weighted
    bad-experience term at ``at`` is ``bad_now``, and with these decayed momentum sums
    (0.0 when absent) and purchases; NaN where the BG/NBD model refuses the purchases.
    The terms are inline (a call per evaluation cost a quarter of the search)."""
    # p_alive (scoring.model) when a fit applies to the customer: x, t_x and the parts of
    # the dropout odds that do not depend on the time
    x = purchase_days - 1
    alive = k.fitted and x > 0 and first_purchase_day >= 0
    unit = first = t_x = odds_base = exponent = alpha = log_alpha_t_x = 0.0
    if alive:
        unit = k.unit
        first = first_purchase_day * DAY_S
        t_x = (last_purchase_day - first_purchase_day) * DAY_S / unit
        if not t_x >= 0:
            return _REFUSED
        odds_base = k.log_a - math.log(k.b + x - 1)
        exponent = k.r + x
        alpha = k.alpha
        log_alpha_t_x = math.log(alpha + t_x)
    alive_w = k.alive_weight
    recency_w = k.recency_weight_alive if alive else k.recency_weight_unknown
    recency_days = k.recency_days
    # momentum: the short-horizon rate against the long one (scores.momentum)
    short_h, long_h = k.short_h, k.long_h
    short_days, long_days = k.short_days, k.long_days
    momentum_weight = k.momentum_weight
    # math.pow, math.log and math.exp are called by name, never through a local alias:
    # compiled, mypyc calls the C functions on unboxed floats only when it sees the name
    # (an alias is a Python call with boxed floats: python -m benchmarks.sweep_cost --parts
    # measures the difference).

    # thresholds.check_time: the bounds, then rising(latest), rising(earliest) and the
    # bisection's midpoints, each compared with the target
    target = k.target_high if level >= 1 else k.target_elevated  # threshold_of(level + 1)
    earliest = at + _CHECK_RESOLUTION_S
    if churn_alert_at is not None and level == 0:
        earliest = max(earliest, churn_alert_at + k.cooldown_s)
    latest = at + k.max_interval_s
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
