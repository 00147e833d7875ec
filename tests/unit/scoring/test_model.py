"""BG/NBD and Gamma-Gamma per customer: the papers' closed forms against the models
integrated numerically over their mixing distributions, the papers' worked figures,
limiting cases, CLV and the parameters' JSON form."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.special import hyp2f1

from scoring.model import (
    BgNbdParams,
    GammaGammaParams,
    ModelParams,
    clv,
    expected_order_value,
    expected_purchases,
    expected_purchases_new_customer,
    p_alive,
    periods,
    simple_clv,
)

# The CDNOW estimates of both papers.
CDNOW = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
CDNOW_SPEND = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)
# A population unlike CDNOW's: a > 1 and b < 1, so the other side of eq. 10's a - 1.
OTHER = BgNbdParams(r=1.7, alpha=12.0, a=2.3, b=0.6)

Integrand = Callable[[float, float], float]


def mixed(params: BgNbdParams, h: Integrand) -> float:
    """The integral of h(lambda, p) over lambda ~ Gamma(r, alpha) and p ~ Beta(a, b), up to
    the densities' constants (every use is a ratio). Substituting lambda = u^(1/r) and
    p = v^(1/a) turns the densities' singular powers at 0 into constants."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b

    def integrand(u: float, v: float) -> float:
        lam, p = math.pow(u, 1 / r), math.pow(v, 1 / a)
        return h(lam, p) * math.exp(-alpha * lam) * math.pow(1 - p, b - 1)

    value, _ = integrate.dblquad(integrand, 0, 1, 0, math.inf, epsabs=0, epsrel=1e-10)
    return float(value)


def posterior_by_integration(
    params: BgNbdParams, x: int, t_x: float, T: float, t: float
) -> tuple[float, float]:
    """(P(alive), E[Y(t)]) from the individual-level model alone: Poisson purchases at rate
    lambda, dropout with probability p after each repeat purchase (the paper's assumptions)."""

    def alive(lam: float, p: float) -> float:
        return (1 - p) ** x * lam**x * math.exp(-lam * T)

    def likelihood(lam: float, p: float) -> float:
        dropped = p * (1 - p) ** (x - 1) * lam**x * math.exp(-lam * t_x) if x > 0 else 0.0
        return alive(lam, p) + dropped

    def alive_then_buys(lam: float, p: float) -> float:
        # Alive at T, the customer starts afresh: E[X(t) | lambda, p] = (1 - e^(-lambda p t))/p.
        return alive(lam, p) * -math.expm1(-lam * p * t) / p

    evidence = mixed(params, likelihood)
    return mixed(params, alive) / evidence, mixed(params, alive_then_buys) / evidence


CASES = [
    (CDNOW, 2, 30.43, 38.86, 39.0),
    (CDNOW, 0, 0.0, 38.86, 39.0),
    (CDNOW, 1, 1.71, 38.86, 52.0),
    (CDNOW, 10, 30.0, 38.0, 10.0),
    (CDNOW, 0, 0.0, 0.0, 39.0),
    (OTHER, 3, 5.0, 40.0, 26.0),
    (OTHER, 0, 0.0, 12.0, 52.0),
    (OTHER, 7, 70.0, 71.0, 4.0),
]


@pytest.mark.parametrize(("params", "x", "t_x", "T", "t"), CASES)
def test_closed_forms_equal_the_model_integrated_over_its_mixing_distributions(
    params: BgNbdParams, x: int, t_x: float, T: float, t: float
) -> None:
    alive, purchases = posterior_by_integration(params, x, t_x, T, t)
    assert p_alive(params, x, t_x, T) == pytest.approx(alive, rel=1e-8)
    assert expected_purchases(params, t, x, t_x, T) == pytest.approx(purchases, rel=1e-8)


def test_the_papers_worked_example() -> None:
    # "Counting your customers", worked example: the customer with x = 2, t_x = 30.43, T = 38.86
    # is expected to make 1.226 purchases in the next 39 weeks.
    assert expected_purchases(CDNOW, 39.0, 2, 30.43, 38.86) == pytest.approx(1.226, abs=5e-4)


def eq_10_as_printed(params: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    series = float(hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t)))
    bracket = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * series
    dropout = a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
    return float((a + b + x - 1) / (a - 1) * bracket / (1 + dropout))


@pytest.mark.parametrize("x", [0, 1, 5, 50, 200, 600])
def test_expected_purchases_equal_eq_10_as_printed_where_it_computes(x: int) -> None:
    for t_x, T, t in [(x * 0.5, x * 0.5 + 3, 39.0), (x * 0.9 + 1, x + 20.0, 104.0)]:
        t_x = t_x if x else 0.0
        expected = eq_10_as_printed(CDNOW, t, x, t_x, T)
        assert expected_purchases(CDNOW, t, x, t_x, T) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("x", [5_000, 100_000])
def test_very_frequent_buyers_get_finite_bounded_expectations(x: int) -> None:
    # Eq. 10 as printed gives NaN here. Alive, the rate's posterior mean is (r+x)/(alpha+T)
    # and (1 - e^(-lambda p t))/p <= lambda t: P(alive) * t * (r+x)/(alpha+T) bounds E[Y(t)];
    # the dropout probability's posterior is tiny, so the bound is nearly reached.
    T, t = float(x), 52.0
    bound = p_alive(CDNOW, x, T, T) * t * (CDNOW.r + x) / (CDNOW.alpha + T)
    assert 0.9 * bound < expected_purchases(CDNOW, t, x, T, T) <= bound


def test_a_new_customer_is_eq_9_and_eq_10_at_age_zero() -> None:
    for params in (CDNOW, OTHER):
        for t in (1.0, 39.0, 78.0):
            new = expected_purchases_new_customer(params, t)
            assert expected_purchases(params, t, 0, 0.0, 0.0) == pytest.approx(new, rel=1e-12)
            assert new == pytest.approx(posterior_by_integration(params, 0, 0.0, 0.0, t)[1])


def test_no_repeat_purchase_means_alive_and_no_time_means_no_purchase() -> None:
    assert p_alive(CDNOW, 0, 0.0, 100.0) == 1.0
    assert expected_purchases(CDNOW, 0.0, 3, 10.0, 20.0) == 0.0


def test_a_frequent_buyer_gone_quiet_for_years_is_dead_without_overflow() -> None:
    assert p_alive(CDNOW, 500, 1.0, 1000.0) < 1e-300
    assert expected_purchases(CDNOW, 52.0, 500, 1.0, 1000.0) == 0.0
    # Bought just now, many times: the only way to be dead is to have dropped out right
    # after this purchase, probability a / (a + b + x - 1).
    just_now = p_alive(CDNOW, 500, 1000.0, 1000.0)
    assert just_now == pytest.approx(1 - CDNOW.a / (CDNOW.a + CDNOW.b + 499), rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    x=st.integers(1, 60),
    t_x=st.floats(0.01, 100.0),
    later=st.floats(0.01, 100.0),
    t=st.floats(0.1, 200.0),
)
def test_silence_lowers_p_alive_and_a_longer_horizon_adds_purchases(
    x: int, t_x: float, later: float, t: float
) -> None:
    T = t_x + later
    alive = p_alive(CDNOW, x, t_x, T)
    assert 0.0 < alive <= 1.0
    assert p_alive(CDNOW, x, t_x, T + 10.0) <= alive
    assert p_alive(CDNOW, x, min(T, t_x + 1.0), T) >= alive
    assert expected_purchases(CDNOW, t * 2, x, t_x, T) >= expected_purchases(CDNOW, t, x, t_x, T)


def test_eq_10_is_continuous_at_a_equal_1() -> None:
    def at(a: float) -> float:
        params = BgNbdParams(r=CDNOW.r, alpha=CDNOW.alpha, a=a, b=CDNOW.b)
        return expected_purchases(params, 39.0, 2, 30.43, 38.86)

    assert math.isfinite(at(1.0))
    assert at(1.0) == pytest.approx((at(1.0 - 1e-4) + at(1.0 + 1e-4)) / 2, rel=1e-6)
    assert expected_purchases_new_customer(
        BgNbdParams(r=1.0, alpha=5.0, a=1.0, b=2.0), 10.0
    ) == pytest.approx(posterior_by_integration(BgNbdParams(1.0, 5.0, 1.0, 2.0), 0, 0, 0, 10)[1])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: p_alive(CDNOW, -1, 0.0, 1.0), "x"),
        (lambda: p_alive(CDNOW, 1, 5.0, 4.0), "t_x"),
        (lambda: expected_purchases(CDNOW, -1.0, 1, 1.0, 2.0), "t (horizon)"),
        (lambda: expected_purchases(CDNOW, math.nan, 1, 1.0, 2.0), "t (horizon)"),
        (lambda: expected_order_value(CDNOW_SPEND, 2, -5.0), "m_x"),
        (lambda: clv(CDNOW, CDNOW_SPEND, 1, 1.0, 2.0, 10.0, horizon_days=0), "horizon_days"),
        (lambda: clv(CDNOW, CDNOW_SPEND, 1, 1.0, 2.0, 10.0, steps=0), "steps"),
        (lambda: clv(CDNOW, CDNOW_SPEND, 1, 1, 2, 10, annual_discount=-0.5), "annual_discount"),
        (lambda: simple_clv(-1.0, 2.0), "value_per_year"),
        (lambda: simple_clv(1.0, math.inf), "expected_lifespan_years"),
    ],
)
def test_bad_input_is_refused_naming_the_variable(call: Callable[[], float], name: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(name) + " "):
        call()


def test_periods_converts_seconds_to_the_model_time_unit() -> None:
    assert periods(14 * 86_400.0, CDNOW) == pytest.approx(2.0)
    daily = BgNbdParams(r=1.0, alpha=1.0, a=1.0, b=1.0, time_unit_days=1.0)
    assert periods(36 * 3600.0, daily) == pytest.approx(1.5)


def posterior_mean_order_value(params: GammaGammaParams, x: int, m_x: float) -> float:
    """E[p / nu | x, m_x] integrating over nu ~ Gamma(q, gamma) weighted by the likelihood of
    an average m_x of x Gamma(p, nu) values, i.e. Gamma(p x, nu x)."""
    p, q, gamma = params.p, params.q, params.gamma

    def log_weight(nu: float) -> float:
        log_prior = (q - 1) * math.log(nu) - gamma * nu
        log_likelihood = p * x * math.log(nu) - nu * x * m_x
        return log_prior + log_likelihood

    # The weight peaks sharply for many transactions: quad is told where (its mode, from
    # its derivative), and the weight is scaled to 1 there so that it does not underflow.
    peak = max(q + p * x - 1, 1e-3) / (gamma + x * m_x)
    top_log = log_weight(peak)

    def weight(nu: float) -> float:
        return math.exp(log_weight(nu) - top_log)

    def area(f: Callable[[float], float]) -> float:
        pieces = [(0.0, peak), (peak, 100 * peak), (100 * peak, math.inf)]
        return sum(float(integrate.quad(f, lo, hi, epsrel=1e-12)[0]) for lo, hi in pieces)

    return area(lambda nu: p / nu * weight(nu)) / area(weight)


@pytest.mark.parametrize(("x", "m_x"), [(0, 0.0), (1, 11.77), (2, 22.35), (14, 40.0), (3, 0.0)])
def test_expected_order_value_is_the_gamma_gamma_posterior_mean(x: int, m_x: float) -> None:
    expected = posterior_mean_order_value(CDNOW_SPEND, x, m_x)
    assert expected_order_value(CDNOW_SPEND, x, m_x) == pytest.approx(expected, rel=1e-8)


def test_expected_order_value_moves_from_the_population_mean_towards_the_customers() -> None:
    population = CDNOW_SPEND.p * CDNOW_SPEND.gamma / (CDNOW_SPEND.q - 1)
    assert expected_order_value(CDNOW_SPEND, 0, 0.0) == pytest.approx(population)
    few, many = (
        expected_order_value(CDNOW_SPEND, 1, 100.0),
        expected_order_value(CDNOW_SPEND, 50, 100.0),
    )
    assert population < few < many < 100.0
    assert many == pytest.approx(100.0, rel=0.02)


def test_undiscounted_clv_is_expected_purchases_times_order_value() -> None:
    purchases = expected_purchases(CDNOW, 365.0 / 7.0, 2, 30.43, 38.86)
    value = expected_order_value(CDNOW_SPEND, 2, 22.35)
    for steps in (1, 12, 52):
        got = clv(CDNOW, CDNOW_SPEND, 2, 30.43, 38.86, 22.35, annual_discount=0.0, steps=steps)
        assert got == pytest.approx(purchases * value, rel=1e-12)


def test_clv_discounts_each_periods_purchases_by_when_they_happen() -> None:
    value = expected_order_value(CDNOW_SPEND, 5, 30.0)
    quarter_weeks = 730.0 / 4 / 7.0
    total = 0.0
    for k in range(1, 5):  # two years in four half-years, 10% a year
        bought = expected_purchases(CDNOW, k * quarter_weeks, 5, 20.0, 30.0) - expected_purchases(
            CDNOW, (k - 1) * quarter_weeks, 5, 20.0, 30.0
        )
        total += bought * value / 1.1 ** (k / 2)
    got = clv(CDNOW, CDNOW_SPEND, 5, 20.0, 30.0, 30.0, horizon_days=730.0, steps=4)
    assert got == pytest.approx(total, rel=1e-12)
    assert got < clv(CDNOW, CDNOW_SPEND, 5, 20.0, 30.0, 30.0, horizon_days=730.0, annual_discount=0)


def test_simple_clv_is_value_per_year_times_lifespan() -> None:
    assert simple_clv(120.0, 3.5) == pytest.approx(420.0)
    assert simple_clv(0.0, 10.0) == 0.0


def test_model_params_round_trip_through_their_json_form() -> None:
    params = ModelParams(bgnbd=CDNOW, gamma_gamma=CDNOW_SPEND)
    assert ModelParams.from_dict(params.to_dict()) == params
    assert ModelParams.from_dict({}) == ModelParams()
    only_bgnbd = {"bgnbd": {"r": 1, "alpha": 2, "a": 3, "b": 4}, "fit": {"customers": 9}}
    assert ModelParams.from_dict(only_bgnbd).bgnbd == BgNbdParams(1.0, 2.0, 3.0, 4.0, 7.0)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"bgnbd": {"r": -1, "alpha": 2, "a": 3, "b": 4}}, "bgnbd.r must be a positive"),
        ({"bgnbd": {"r": 1, "alpha": "2", "a": 3, "b": 4}}, "bgnbd.alpha must be a number"),
        ({"bgnbd": {"r": 1, "alpha": 2, "a": True, "b": 4}}, "bgnbd.a must be a number"),
        ({"bgnbd": {"r": 1, "alpha": 2, "a": 3}}, "bgnbd: missing field.s. b"),
        ({"bgnbd": {"r": 1, "alpha": 2, "a": 3, "b": 4, "c": 5}}, "bgnbd: unknown field.s. c"),
        ({"bgnbd": [1, 2, 3, 4]}, "bgnbd must be an object"),
        ({"gamma_gamma": {"p": 1, "q": 0.9, "gamma": 3}}, "gamma_gamma.q must be > 1"),
        ({"gamma_gamma": {"p": 1, "q": 2, "gamma": math.inf}}, "gamma_gamma.gamma must be"),
        ({"gamma_gamma": {"p": 1, "q": 2}}, "gamma_gamma: missing field.s. gamma"),
        ({"bgnbd_params": {}}, "unknown field.s. bgnbd_params"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(document: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelParams.from_dict(document)  # type: ignore[arg-type]  # wrong types on purpose
