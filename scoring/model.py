"""The BG/NBD purchase model and the Gamma-Gamma spend model, evaluated per customer.

BG/NBD (Fader, Hardie and Lee, "Counting your customers the easy way", 2005): while alive,
a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each purchase
they drop out with probability p ~ Beta(a, b). Gamma-Gamma (Fader, Hardie and Lee, "RFM and
CLV", 2005): a customer's transaction values are Gamma(p, nu) with nu ~ Gamma(q, gamma).

A customer is summarised by x (repeat purchases), t_x (time of the last purchase) and T
(age), both measured from the first purchase in units of ``time_unit_days`` (weeks in the
paper), and m_x (average value of the repeat purchases). The parameters come from
``scoring.fit``. Pure: no I/O, the clock is the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scipy.special import hyp2f1

SECONDS_PER_DAY = 86_400.0
DAYS_PER_YEAR = 365.0
# Keys of a parameters document that describe the fit (calibration end, log-likelihood,
# sample size) rather than the model: kept by the file, ignored by the model.
METADATA_KEY = "fit"


def _check_positive(name: str, value: float) -> None:
    # bool is an int: reject it explicitly, a flag is never a model parameter.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float
    time_unit_days: float = 7.0

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b", "time_unit_days"):
            _check_positive(f"bgnbd.{name}", getattr(self, name))


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("p", "q", "gamma"):
            _check_positive(f"gamma_gamma.{name}", getattr(self, name))
        # The population mean order value is p * gamma / (q - 1): with q <= 1 it does not
        # exist and every expected order value would be infinite.
        if self.q <= 1:
            raise ValueError(f"gamma_gamma.q must be > 1 (mean spend is finite), got {self.q!r}")


def _section(d: Mapping[str, Any], key: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    section = d.get(key)
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ValueError(f"{key} must be an object, got {section!r}")
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ValueError(f"{key}: unknown field(s) {', '.join(map(str, unknown))}")
    return dict(section)


def _numbers(key: str, section: Mapping[str, Any]) -> dict[str, float]:
    # JSON may carry 7 for 7.0; the model works in floats.
    out = {}
    for name, value in section.items():
        _check_positive(f"{key}.{name}", value)
        out[name] = float(value)
    return out


@dataclass(frozen=True, slots=True)
class ModelParams:
    bgnbd: BgNbdParams | None = None
    gamma_gamma: GammaGammaParams | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelParams:
        """Parameters from their JSON form; a ValueError names the bad field."""
        if not isinstance(d, Mapping):
            raise ValueError(f"model parameters must be an object, got {d!r}")
        unknown = sorted(set(d) - {"bgnbd", "gamma_gamma", METADATA_KEY})
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(map(str, unknown))}")
        bg_fields = ("r", "alpha", "a", "b", "time_unit_days")
        bg = _section(d, "bgnbd", bg_fields)
        gg = _section(d, "gamma_gamma", ("p", "q", "gamma"))
        bgnbd = None
        if bg is not None:
            missing = [name for name in bg_fields[:4] if name not in bg]
            if missing:
                raise ValueError(f"bgnbd: missing field(s) {', '.join(missing)}")
            bgnbd = BgNbdParams(**_numbers("bgnbd", bg))
        gamma_gamma = None
        if gg is not None:
            missing = [name for name in ("p", "q", "gamma") if name not in gg]
            if missing:
                raise ValueError(f"gamma_gamma: missing field(s) {', '.join(missing)}")
            gamma_gamma = GammaGammaParams(**_numbers("gamma_gamma", gg))
        return cls(bgnbd=bgnbd, gamma_gamma=gamma_gamma)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.bgnbd is not None:
            bg = self.bgnbd
            out["bgnbd"] = {
                "r": bg.r,
                "alpha": bg.alpha,
                "a": bg.a,
                "b": bg.b,
                "time_unit_days": bg.time_unit_days,
            }
        if self.gamma_gamma is not None:
            gg = self.gamma_gamma
            out["gamma_gamma"] = {"p": gg.p, "q": gg.q, "gamma": gg.gamma}
        return out


def periods(seconds: float, params: BgNbdParams) -> float:
    """A duration in seconds in the model's time unit (weeks for the paper's fit)."""
    return seconds / (SECONDS_PER_DAY * params.time_unit_days)


def _check_rft(x: int, t_x: float, T: float) -> None:
    if x < 0:
        raise ValueError(f"x (repeat purchases) must be >= 0, got {x!r}")
    if not 0 <= t_x <= T:
        raise ValueError(f"t_x (last purchase) must be within [0, T={T!r}], got {t_x!r}")


def _log_dropout_odds(params: BgNbdParams, x: int, t_x: float, T: float) -> float:
    # log of a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x): the odds of having dropped out at the
    # last purchase against being alive now. Logs, because the power overflows for frequent
    # buyers who went quiet.
    return (
        math.log(params.a)
        - math.log(params.b + x - 1)
        + (params.r + x) * (math.log(params.alpha + T) - math.log(params.alpha + t_x))
    )


def p_alive(params: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """P(alive | x, t_x, T), the BG/NBD closed form (1 when x = 0): plain math, per event."""
    _check_rft(x, t_x, T)
    if x == 0:
        return 1.0
    log_odds = _log_dropout_odds(params, x, t_x, T)
    if log_odds > 0:
        odds_inverse = math.exp(-log_odds)
        return odds_inverse / (1.0 + odds_inverse)
    return 1.0 / (1.0 + math.exp(log_odds))


def _expected_alive_purchases(params: BgNbdParams, t: float, x: int, T: float, a: float) -> float:
    # The numerator of eq. 10: (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x)
    # * 2F1(r+x, b+x; a+b+x-1; z)], z = t/(alpha+T+t). As printed, the power underflows and
    # the series blows up for frequent buyers (NaN from a few thousand purchases on); Euler's
    # transformation 2F1(A,B;C;z) = (1-z)^(C-A-B) 2F1(C-A,C-B;C;z) folds the power into
    # (1-z)^(a-1) and leaves a series with small parameters that converges fast for any x.
    r, alpha, b = params.r, params.alpha, params.b
    z = t / (alpha + T + t)
    series = float(hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z))
    bracket = 1.0 - math.pow(1.0 - z, a - 1) * series
    return (a + b + x - 1) / (a - 1) * bracket


# Eq. 10 divides by (a - 1); the expectation is continuous in a there, so at a = 1 it is
# the mean of the two sides a small step away.
_A_SINGULAR_STEP = 1e-6


def expected_purchases(params: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """E[Y(t) | x, t_x, T]: expected purchases in the next t periods (paper eq. 10)."""
    _check_rft(x, t_x, T)
    if t < 0 or not math.isfinite(t):
        raise ValueError(f"t (horizon) must be a finite number >= 0, got {t!r}")
    if t == 0:
        return 0.0
    a = params.a
    if abs(a - 1.0) < _A_SINGULAR_STEP:
        numerator = 0.5 * (
            _expected_alive_purchases(params, t, x, T, 1.0 - _A_SINGULAR_STEP)
            + _expected_alive_purchases(params, t, x, T, 1.0 + _A_SINGULAR_STEP)
        )
    else:
        numerator = _expected_alive_purchases(params, t, x, T, a)
    if x == 0:
        return numerator
    log_odds = _log_dropout_odds(params, x, t_x, T)
    if log_odds > 700:  # exp would overflow: the customer is, for all purposes, gone
        return 0.0
    return numerator / (1.0 + math.exp(log_odds))


def expected_purchases_new_customer(params: BgNbdParams, t: float) -> float:
    """E[X(t)]: expected purchases of a customer in their first t periods (paper eq. 9)."""
    if t < 0 or not math.isfinite(t):
        raise ValueError(f"t (horizon) must be a finite number >= 0, got {t!r}")
    if t == 0:
        return 0.0
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if abs(a - 1.0) < _A_SINGULAR_STEP:
        a = 1.0 + _A_SINGULAR_STEP
    series = float(hyp2f1(r, b, a + b - 1, t / (alpha + t)))
    bracket = 1.0 - math.pow(alpha / (alpha + t), r) * series
    return (a + b - 1) / (a - 1) * bracket


def expected_order_value(params: GammaGammaParams, x: int, m_x: float) -> float:
    """E[M | x, m_x]: the Gamma-Gamma conditional mean order value ("RFM and CLV"),
    a weighted mean of the population mean and the customer's own average m_x."""
    if x < 0:
        raise ValueError(f"x (repeat transactions) must be >= 0, got {x!r}")
    if x > 0 and (m_x < 0 or not math.isfinite(m_x)):
        raise ValueError(f"m_x (average order value) must be a finite number >= 0, got {m_x!r}")
    p, q, gamma = params.p, params.q, params.gamma
    if x == 0:
        return p * gamma / (q - 1)
    return p * (gamma + x * m_x) / (p * x + q - 1)


def clv(
    bgnbd: BgNbdParams,
    gamma_gamma: GammaGammaParams,
    x: int,
    t_x: float,
    T: float,
    m_x: float,
    horizon_days: float = 365.0,
    annual_discount: float = 0.1,
    steps: int = 12,
) -> float:
    """Discounted expected value of the customer's purchases over the next ``horizon_days``:
    the horizon is cut in ``steps`` periods, each period's expected purchases times the
    expected order value discounted to now at ``annual_discount`` a year (the way lifetimes'
    ``customer_lifetime_value`` does, with the rate per year instead of per period)."""
    if not horizon_days > 0 or not math.isfinite(horizon_days):
        raise ValueError(f"horizon_days must be a positive finite number, got {horizon_days!r}")
    if not annual_discount >= 0 or not math.isfinite(annual_discount):
        raise ValueError(f"annual_discount must be a finite number >= 0, got {annual_discount!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    order_value = expected_order_value(gamma_gamma, x, m_x)
    step = horizon_days / steps / bgnbd.time_unit_days
    total = 0.0
    bought_before = 0.0
    for k in range(1, steps + 1):
        bought_by_end = expected_purchases(bgnbd, k * step, x, t_x, T)
        years = k * horizon_days / steps / DAYS_PER_YEAR
        discount = math.pow(1.0 + annual_discount, years)
        total += (bought_by_end - bought_before) * order_value / discount
        bought_before = bought_by_end
    return total


def simple_clv(value_per_year: float, expected_lifespan_years: float) -> float:
    """The simple form: customer value per year x expected lifespan in years."""
    if not math.isfinite(value_per_year) or value_per_year < 0:
        raise ValueError(f"value_per_year must be a finite number >= 0, got {value_per_year!r}")
    if not math.isfinite(expected_lifespan_years) or expected_lifespan_years < 0:
        raise ValueError(
            f"expected_lifespan_years must be a finite number >= 0, got {expected_lifespan_years!r}"
        )
    return value_per_year * expected_lifespan_years
