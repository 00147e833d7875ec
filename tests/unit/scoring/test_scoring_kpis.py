"""Population KPI formulas on hand-computed examples, and the state-diff bookkeeping that
keeps them incrementally."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring.kpis import TIERS, customer_flags, deltas, diff, flag_changes, kpis
from scoring.state import CustomerState

T0 = 1_709_251_200.0


def customer(
    cid: str = "c1", tier: str = "", clv: float = 0.0, products: int = 0, **counts: int
) -> CustomerState:
    """A state with these counters, tier, CLV and ``products`` distinct products bought
    (bits of the linear-counting bitmap: exact for a few products)."""
    state = CustomerState(
        customer_id=cid,
        landmark=T0,
        counts=dict(counts),
        first_seen=T0,
        last_seen=T0,
        tier=tier,
        clv=clv,
        products_bought=(1 << products) - 1,
    )
    assert state.distinct_products() == products
    return state


def test_every_kpi_on_hand_computed_counters() -> None:
    counters = {
        "nps_answers": 10,
        "promoters": 5,
        "detractors": 2,
        "csat_answers": 4,
        "csat_satisfied": 3,
        "customers": 8,
        "repurchasers": 2,
        "buyers": 5,
        "single_product": 2,
        "multi_product": 3,
        "clv_sum": 400.0,
        "sessions": 12,
        "conversions": 3,
        "bounces": 4,
        "orders": 5,
        "returns": 1,
        "visitors": 6,
        "returning_visitors": 3,
        "tier_loyal": 3,
        "tier_lost": 1,
    }
    got = kpis(counters)
    # NPS: 50% promoters - 20% detractors; CSAT: 3 of 4 answers are 4-5.
    assert got["nps"] == pytest.approx(30.0)
    assert got["csat_pct"] == pytest.approx(75.0)
    assert got["repurchase_rate"] == pytest.approx(25.0)  # 2 of 8 customers
    assert got["upsell_ratio"] == pytest.approx(1.5)  # 3 multi-product / 2 single-product
    assert got["cli"] == pytest.approx((30.0 + 25.0 + 1.5) / 3)
    assert got["avg_clv"] == pytest.approx(50.0)
    assert got["conversion_rate"] == pytest.approx(25.0)  # 3 of 12 sessions
    assert got["bounce_rate"] == pytest.approx(100.0 / 3)  # 4 of 12 sessions
    assert got["return_rate"] == pytest.approx(20.0)  # 1 of 5 orders
    assert got["returning_visitor_rate"] == pytest.approx(50.0)  # 3 of 6 visitors
    assert got["customers"] == 8
    assert got["customers_loyal"] == 3 and got["customers_lost"] == 1
    assert got["customers_champion"] == 0
    assert {f"customers_{t}" for t in TIERS} <= set(got)


def test_undefined_kpis_are_none_not_zero() -> None:
    got = kpis({})
    assert all(got[k] is None for k in ("nps", "csat_pct", "repurchase_rate", "cli", "avg_clv"))
    assert got["customers"] == 0 and got["customers_champion"] == 0
    # The CLI needs all three of its parts: no single-product buyer, no upsell ratio.
    partial = kpis({"nps_answers": 2, "promoters": 1, "customers": 1, "multi_product": 1})
    assert partial["nps"] == pytest.approx(50.0) and partial["repurchase_rate"] == 0.0
    assert partial["upsell_ratio"] is None and partial["cli"] is None


def test_an_unknown_tier_is_reported_too() -> None:
    assert kpis({"tier_vip": 2})["customers_vip"] == 2


def test_a_new_customer_adds_its_flags_and_counters() -> None:
    state = customer(
        tier="promising", clv=120.5, products=1, orders=1, sessions=3, bounces=1,
        conversions=1, nps_answers=1, promoters=1,
    )  # fmt: skip
    assert deltas(None, state) == {
        "customers": 1,
        "visitors": 1,
        "returning_visitors": 1,
        "buyers": 1,
        "single_product": 1,
        "clv_sum": 120.5,
        "tier_promising": 1,
        "orders": 1,
        "sessions": 3,
        "bounces": 1,
        "conversions": 1,
        "nps_answers": 1,
        "promoters": 1,
    }


def test_a_change_moves_the_customer_between_counts() -> None:
    before = customer(tier="loyal", clv=100.0, products=1, orders=1, sessions=1, csat_answers=1)
    after = customer(
        tier="champion", clv=180.0, products=3, orders=2, sessions=1, csat_answers=2,
        csat_satisfied=1,
    )  # fmt: skip
    assert deltas(before, after) == {
        "repurchasers": 1,
        "single_product": -1,
        "multi_product": 1,
        "clv_sum": 80.0,
        "tier_loyal": -1,
        "tier_champion": 1,
        "orders": 1,
        "csat_answers": 1,
        "csat_satisfied": 1,
    }
    assert deltas(after, after) == {}


def test_a_population_from_its_states() -> None:
    """Four customers, the KPIs worked out by hand from their states."""
    states = [
        # two orders of three products, promoter, 4 sessions of which 2 converted, 1 bounce
        customer("a", "champion", 300.0, 3, orders=2, sessions=4, conversions=2, bounces=1,
                 nps_answers=1, promoters=1, csat_answers=1, csat_satisfied=1),
        # one order of one product, then returned; detractor; one bounced session
        customer("b", "at_risk", 40.0, 1, orders=1, returns=1, sessions=1, bounces=1,
                 nps_answers=1, detractors=1, csat_answers=1),
        # three orders of one product, passive NPS answer
        customer("c", "loyal", 140.0, 1, orders=3, sessions=2, conversions=2,
                 nps_answers=1),
        # browsed only, not yet tiered
        customer("d", "", 0.0, 0, sessions=1),
    ]  # fmt: skip
    counters: dict[str, float] = {}
    for s in states:
        for name, delta in deltas(None, s).items():
            counters[name] = counters.get(name, 0.0) + delta
    got = kpis(counters)
    assert got["nps"] == pytest.approx((1 - 1) / 3 * 100)
    assert got["csat_pct"] == pytest.approx(50.0)
    assert got["repurchase_rate"] == pytest.approx(2 / 4 * 100)  # a and c
    assert got["upsell_ratio"] == pytest.approx(1 / 2)  # a / (b, c)
    assert got["cli"] == pytest.approx((0.0 + 50.0 + 0.5) / 3)
    assert got["avg_clv"] == pytest.approx(480.0 / 4)
    assert got["conversion_rate"] == pytest.approx(4 / 8 * 100)
    assert got["bounce_rate"] == pytest.approx(2 / 8 * 100)
    assert got["return_rate"] == pytest.approx(1 / 6 * 100)
    assert got["returning_visitor_rate"] == pytest.approx(2 / 4 * 100)  # a, c of 4
    assert [got[f"customers_{t}"] for t in ("champion", "loyal", "at_risk", "lost")] == [
        1, 1, 1, 0,
    ]  # fmt: skip


def test_a_customer_not_yet_evaluated_has_no_tier() -> None:
    state = CustomerState.new("fresh", T0).with_counts(orders=2, sessions=1)
    flags = customer_flags(state)
    assert flags["customers"] == 1 and flags["repurchasers"] == 1 and flags["buyers"] == 1
    assert flags["visitors"] == 1 and "returning_visitors" not in flags
    assert not any(name.startswith("tier_") for name in flags)


changes = st.lists(
    st.tuples(
        st.integers(0, 3),  # which customer changes
        st.sampled_from(["", *TIERS]),
        st.floats(0, 1e4, allow_nan=False),
        st.integers(0, 4),  # distinct products
        st.dictionaries(
            st.sampled_from(["orders", "sessions", "bounces", "nps_answers", "promoters"]),
            st.integers(0, 3),
        ),
    ),
    max_size=40,
)


@given(changes)
def test_summed_diffs_equal_a_batch_pass_over_the_final_states(
    steps: list[tuple[int, str, float, int, dict[str, int]]],
) -> None:
    """Whatever happens to whom in which order, the running sum of deltas is the sum of
    deltas(None, state) over the states as they end up."""
    current: dict[int, CustomerState] = {}
    running: dict[str, float] = {}
    for who, tier, clv, products, increments in steps:
        before = current.get(who)
        counts = dict(before.counts) if before else {}
        for name, inc in increments.items():
            counts[name] = counts.get(name, 0) + inc  # counters only grow
        after = customer(str(who), tier, clv, products, **counts)
        for name, delta in deltas(before, after).items():
            running[name] = running.get(name, 0.0) + delta
        current[who] = after
    batch: dict[str, float] = {}
    for state in current.values():
        for name, delta in deltas(None, state).items():
            batch[name] = batch.get(name, 0.0) + delta
    names = running.keys() | batch.keys()
    for name in names:
        assert math.isclose(running.get(name, 0.0), batch.get(name, 0.0), abs_tol=1e-6), name


flag_inputs = st.tuples(
    st.sampled_from(["", *TIERS]),
    st.one_of(st.sampled_from([0.0, -0.0, 12.5]), st.floats(-1e6, 1e6)),
    st.integers(0, 4),
    st.integers(0, 3),
    st.integers(0, 3),
)


@given(flag_inputs, flag_inputs)
def test_flag_changes_are_the_difference_of_the_flags(
    before: tuple[str, float, int, int, int], after: tuple[str, float, int, int, int]
) -> None:
    """What the scorer adds per customer, computed without the two flag dicts, is exactly
    their difference (the same values from the same subtractions)."""
    states = [
        customer("c1", tier, clv, products, sessions=sessions, orders=orders)
        for tier, clv, products, sessions, orders in (before, after)
    ]
    want = diff(customer_flags(states[1]), customer_flags(states[0]))
    assert flag_changes(states[0], states[1]) == want
