"""Maximum-likelihood fit of the BG/NBD and Gamma-Gamma models to a transaction history.

The summary follows the papers (Fader, Hardie and Lee 2005, "Counting your customers the
easy way" and "RFM and CLV"): a customer's transactions on one day are one purchase whose
value is the day's total; x is the number of repeat purchase days, t_x the time from the
first purchase to the last, T the time from the first purchase to the end of calibration
(in units of ``time_unit_days``, weeks in the papers), m_x the average value of the repeat
purchases (the first one is left out, as in the papers). On the CDNOW sample this gives the
papers' own summary and estimates. Pure: the rows come from the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import betaln, gammaln

from scoring.model import BgNbdParams, GammaGammaParams

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Transaction:
    customer_id: str
    day: date
    amount: float


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    x: int  # repeat purchase days in the calibration period
    t_x: float  # first purchase -> last purchase, in time units
    T: float  # first purchase -> end of calibration, in time units
    m_x: float  # average value of the repeat purchases (0.0 when x == 0)


class FitError(ValueError):
    """The data cannot be fitted (too little of it, or the optimiser did not converge)."""


def summarise(
    rows: Iterable[Transaction], calibration_end: date, time_unit_days: float = 7.0
) -> dict[str, CustomerSummary]:
    """Per-customer (x, t_x, T, m_x) from transactions up to and including
    ``calibration_end``; customers whose first purchase is later are not in the sample."""
    if not time_unit_days > 0:
        raise ValueError(f"time_unit_days must be > 0, got {time_unit_days!r}")
    days: dict[str, dict[date, float]] = {}
    for row in rows:
        if row.day > calibration_end:
            continue
        by_day = days.setdefault(row.customer_id, {})
        by_day[row.day] = by_day.get(row.day, 0.0) + row.amount
    summaries: dict[str, CustomerSummary] = {}
    for customer_id, by_day in days.items():
        ordered = sorted(by_day)
        first, last = ordered[0], ordered[-1]
        repeats = [by_day[day] for day in ordered[1:]]
        summaries[customer_id] = CustomerSummary(
            x=len(repeats),
            t_x=(last - first).days / time_unit_days,
            T=(calibration_end - first).days / time_unit_days,
            m_x=sum(repeats) / len(repeats) if repeats else 0.0,
        )
    return summaries


def _columns(summaries: Iterable[CustomerSummary]) -> tuple[FloatArray, ...]:
    rows = list(summaries)
    x = np.array([s.x for s in rows], dtype=np.float64)
    t_x = np.array([s.t_x for s in rows], dtype=np.float64)
    T = np.array([s.T for s in rows], dtype=np.float64)
    m_x = np.array([s.m_x for s in rows], dtype=np.float64)
    return x, t_x, T, m_x


def bgnbd_log_likelihood(
    r: float, alpha: float, a: float, b: float, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    """Each customer's log-likelihood under BG/NBD ("Counting your customers", eq. 6):
    the log of  B(a,b+x)/B(a,b) Gamma(r+x) alpha^r / (Gamma(r) (alpha+T)^(r+x))
    + [x>0] B(a+1,b+x-1)/B(a,b) Gamma(r+x) alpha^r / (Gamma(r) (alpha+t_x)^(r+x))."""
    common = gammaln(r + x) - gammaln(r) + r * math.log(alpha) - betaln(a, b)
    alive = betaln(a, b + x) - (r + x) * np.log(alpha + T)
    repeat = x > 0
    # The second term exists only for repeat buyers; b + x - 1 is then > 0 for any b > 0.
    x_rep = np.where(repeat, x, 1.0)
    dropped = betaln(a + 1, b + x_rep - 1) - (r + x) * np.log(alpha + t_x)
    mixed = np.where(repeat, np.logaddexp(alive, dropped), alive)
    result: FloatArray = common + mixed
    return result


def gamma_gamma_log_likelihood(
    p: float, q: float, gamma: float, x: FloatArray, m_x: FloatArray
) -> FloatArray:
    """Each repeat buyer's log-likelihood of their average spend m_x over x transactions
    ("RFM and CLV"): the mean of x Gamma(p, nu) values with nu ~ Gamma(q, gamma)."""
    px = p * x
    result: FloatArray = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * math.log(gamma)
        + px * np.log(x)
        + (px - 1) * np.log(m_x)
        - (px + q) * np.log(gamma + x * m_x)
    )
    return result


def _maximise(
    log_likelihood: Callable[[FloatArray], float], n_params: int, what: str
) -> FloatArray:
    # Optimised over log-parameters, so every trial value is positive without bounds.
    def objective(log_params: FloatArray) -> float:
        value = log_likelihood(np.exp(log_params))
        return -value if math.isfinite(value) else math.inf

    start = np.zeros(n_params)
    # Nelder-Mead first: it copes with the flat, curved ridges of these likelihoods from a
    # poor start; BFGS then polishes to the optimum.
    rough = minimize(objective, start, method="Nelder-Mead", options={"maxiter": 20_000})
    result = minimize(objective, rough.x, method="BFGS", options={"gtol": 1e-8})
    best = result if result.fun <= rough.fun else rough
    if not math.isfinite(float(best.fun)):
        raise FitError(f"{what}: the likelihood is not finite at any tried parameters")
    if not (result.success or rough.success):
        raise FitError(f"{what}: the optimiser did not converge ({result.message})")
    params: FloatArray = np.exp(best.x)
    return params


def fit_bgnbd(summaries: Iterable[CustomerSummary], time_unit_days: float = 7.0) -> BgNbdParams:
    """Maximum-likelihood r, alpha, a, b (alpha in ``time_unit_days`` units, the units of
    the summaries' t_x and T)."""
    x, t_x, T, _ = _columns(summaries)
    if x.size == 0:
        raise FitError("BG/NBD: no customers in the calibration period")
    if not (x > 0).any():
        raise FitError("BG/NBD: no customer made a repeat purchase; nothing to fit")

    def total(params: FloatArray) -> float:
        r, alpha, a, b = (float(v) for v in params)
        return float(bgnbd_log_likelihood(r, alpha, a, b, x, t_x, T).sum())

    r, alpha, a, b = (float(v) for v in _maximise(total, 4, "BG/NBD"))
    return BgNbdParams(r=r, alpha=alpha, a=a, b=b, time_unit_days=time_unit_days)


def fit_gamma_gamma(summaries: Iterable[CustomerSummary]) -> GammaGammaParams:
    """Maximum-likelihood p, q, gamma from the repeat buyers with a positive average spend
    (the model's values are positive; others carry no information about spend)."""
    x, _, _, m_x = _columns(summaries)
    usable = (x > 0) & (m_x > 0)
    if usable.sum() < 2:
        raise FitError("Gamma-Gamma: fewer than 2 repeat buyers with a positive spend")
    x, m_x = x[usable], m_x[usable]

    def total(params: FloatArray) -> float:
        p, q, gamma = (float(v) for v in params)
        return float(gamma_gamma_log_likelihood(p, q, gamma, x, m_x).sum())

    p, q, gamma = (float(v) for v in _maximise(total, 3, "Gamma-Gamma"))
    try:
        return GammaGammaParams(p=p, q=q, gamma=gamma)
    except ValueError as exc:
        raise FitError(f"Gamma-Gamma: the fitted spend has no finite mean: {exc}") from None


def population_summary(summaries: Mapping[str, CustomerSummary]) -> dict[str, float]:
    """Counts that go with a fit: customers, repeat buyers, repeat purchases."""
    rows = list(summaries.values())
    return {
        "customers": float(len(rows)),
        "repeat_buyers": float(sum(1 for s in rows if s.x > 0)),
        "repeat_purchases": float(sum(s.x for s in rows)),
    }
