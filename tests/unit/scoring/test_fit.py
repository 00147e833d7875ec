"""The fit: the papers' summary of a transaction log, their CDNOW estimates reproduced, and
known parameters recovered from a population drawn from them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from scoring.fit import (
    CustomerSummary,
    FitError,
    Transaction,
    bgnbd_log_likelihood,
    fit_bgnbd,
    fit_gamma_gamma,
    summarise,
)
from streams.tools.modelfit import read_transactions

# Fetched by `make cdnow` (a prerequisite of `make unit` and `make test`).
CDNOW_FILE = Path(__file__).resolve().parents[3] / ".engagement" / "data" / "CDNOW_sample.txt"
CALIBRATION_END = date(1997, 9, 30)


@pytest.fixture(scope="module")
def cdnow() -> dict[str, CustomerSummary]:
    if not CDNOW_FILE.is_file():
        pytest.fail(f"{CDNOW_FILE} is missing: run `make cdnow` (make unit/test do it)")
    # The same reader as `engagement model fit --format cdnow`.
    return summarise(read_transactions(CDNOW_FILE, "cdnow"), CALIBRATION_END)


def test_cdnow_summary_is_the_papers(cdnow: dict[str, CustomerSummary]) -> None:
    # "Counting your customers": 2,357 customers, 1,411 of them with no repeat
    # purchase in the 39-week calibration period; customer 1 (CDNOW id 00004) is the worked
    # example: x = 2, t_x = 30.43, T = 38.86, and ("RFM and CLV") average repeat spend 22.35.
    assert len(cdnow) == 2357
    assert sum(1 for s in cdnow.values() if s.x == 0) == 1411
    first = cdnow["00004"]
    assert (first.x, round(first.t_x, 2), round(first.T, 2)) == (2, 30.43, 38.86)
    assert first.m_x == pytest.approx(22.345)


def test_cdnow_bgnbd_fit_reproduces_the_paper(cdnow: dict[str, CustomerSummary]) -> None:
    fitted = fit_bgnbd(cdnow.values())
    paper = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in paper.items():
        assert getattr(fitted, name) == pytest.approx(value, rel=0.01), name
    assert fitted.time_unit_days == 7.0


def test_cdnow_log_likelihood_at_the_papers_estimates_is_the_papers(
    cdnow: dict[str, CustomerSummary],
) -> None:
    x = np.array([s.x for s in cdnow.values()], dtype=np.float64)
    t_x = np.array([s.t_x for s in cdnow.values()], dtype=np.float64)
    T = np.array([s.T for s in cdnow.values()], dtype=np.float64)
    # The paper reports LL = -9582.4 at its estimates.
    total = bgnbd_log_likelihood(0.243, 4.414, 0.793, 2.426, x, t_x, T).sum()
    assert total == pytest.approx(-9582.4, abs=0.5)


def test_cdnow_gamma_gamma_fit_reproduces_the_paper(cdnow: dict[str, CustomerSummary]) -> None:
    fitted = fit_gamma_gamma(cdnow.values())
    # "RFM and CLV": p = 6.25, q = 3.74, gamma = 15.44.
    assert fitted.p == pytest.approx(6.25, rel=0.02)
    assert fitted.q == pytest.approx(3.74, rel=0.02)
    assert fitted.gamma == pytest.approx(15.44, rel=0.02)


def draw_population(n: int, seed: int) -> list[CustomerSummary]:
    """Customers drawn from the models' own story: rate lambda ~ Gamma(0.5, 4), dropout
    p ~ Beta(0.8, 2.5) after each repeat purchase, values ~ Gamma(6, nu), nu ~ Gamma(4, 15),
    each observed for 20 to 52 weeks after their first purchase."""
    rng = np.random.default_rng(seed)
    customers = []
    for _ in range(n):
        age = rng.uniform(20.0, 52.0)
        rate, dropout = rng.gamma(0.5, 1 / 4.0), rng.beta(0.8, 2.5)
        nu = rng.gamma(4.0, 1 / 15.0)
        t = last = spent = 0.0
        repeats = 0
        while True:
            t += rng.exponential(1 / rate)
            if t > age:
                break
            repeats, last = repeats + 1, t
            spent += rng.gamma(6.0, 1 / nu)
            if rng.random() < dropout:
                break
        customers.append(CustomerSummary(repeats, last, age, spent / repeats if repeats else 0.0))
    return customers


def test_known_parameters_are_recovered_from_a_population_drawn_from_them() -> None:
    population = draw_population(5000, seed=11)
    bgnbd = fit_bgnbd(population)
    assert bgnbd.r == pytest.approx(0.5, rel=0.1)
    assert bgnbd.alpha == pytest.approx(4.0, rel=0.1)
    # The dropout Beta is seen only through those who dropped out: a wider margin.
    assert bgnbd.a == pytest.approx(0.8, rel=0.25)
    assert bgnbd.b == pytest.approx(2.5, rel=0.25)
    spend = fit_gamma_gamma(population)
    assert spend.p == pytest.approx(6.0, rel=0.15)
    assert spend.q == pytest.approx(4.0, rel=0.15)
    assert spend.gamma == pytest.approx(15.0, rel=0.15)
    assert spend.p * spend.gamma / (spend.q - 1) == pytest.approx(6.0 * 15.0 / 3.0, rel=0.05)


def test_summary_counts_a_day_once_and_leaves_the_first_purchase_out_of_the_spend() -> None:
    rows = [
        Transaction("c1", date(2026, 1, 1), 100.0),
        Transaction("c1", date(2026, 1, 8), 10.0),
        Transaction("c1", date(2026, 1, 8), 5.0),  # same day: one purchase of 15
        Transaction("c1", date(2026, 1, 22), 45.0),
        Transaction("c1", date(2026, 3, 1), 999.0),  # after calibration: not seen
        Transaction("c2", date(2026, 1, 29), 20.0),
        Transaction("c3", date(2026, 2, 1), 20.0),  # first purchase after calibration
    ]
    summary = summarise(rows, date(2026, 1, 29))
    assert summary == {
        "c1": CustomerSummary(x=2, t_x=3.0, T=4.0, m_x=30.0),
        "c2": CustomerSummary(x=0, t_x=0.0, T=0.0, m_x=0.0),
    }
    daily = summarise(rows, date(2026, 1, 29), time_unit_days=1.0)
    assert daily["c1"] == CustomerSummary(x=2, t_x=21.0, T=28.0, m_x=30.0)


def test_data_that_cannot_be_fitted_is_refused_saying_why() -> None:
    one_timers = [CustomerSummary(0, 0.0, 10.0, 0.0)] * 5
    with pytest.raises(FitError, match="no customer made a repeat purchase"):
        fit_bgnbd(one_timers)
    with pytest.raises(FitError, match="no customers"):
        fit_bgnbd([])
    with pytest.raises(FitError, match="Gamma-Gamma: fewer than 2 repeat buyers"):
        fit_gamma_gamma([*one_timers, CustomerSummary(1, 2.0, 10.0, 30.0)])
