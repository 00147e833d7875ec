"""KpiDelta: the day an event counts on is ``day_of`` of its scorer-clock time, also for
events at and beside day boundaries and for runs of one customer's events."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.state import DAY_S, CustomerState
from streams.state.kpis import ALL_TIME, KpiDelta, day_field, day_of
from streams.state.store import ShardWrite

DAY0 = 20_460  # 2026-01-07


def _ordered(customer_id: str, orders: int) -> CustomerState:
    return CustomerState.new(customer_id, DAY0 * DAY_S).evolve(counts={"orders": orders})


# Times at and next to day boundaries, where a shortcut would put an event on the
# neighbouring day.
near_boundaries = st.builds(
    lambda day, offset: (DAY0 + day) * DAY_S + offset,
    st.integers(-3, 3),
    st.sampled_from([-1.0, -1e-6, -0.5e-6, 0.0, 1e-6, 0.5, 1.0, DAY_S / 2]) | st.floats(-2, 2),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(near_boundaries, min_size=1, max_size=30))
def test_each_event_counts_on_the_day_of_its_time(times: list[float]) -> None:
    delta = KpiDelta()
    expected: dict[str, float] = {}
    for i, now in enumerate(times):
        # One customer per event: each event is its own run, one order on its own day.
        delta.add_events(None, _ordered(f"c{i}", 1), now)
        for name in (ALL_TIME + "orders", day_field(day_of(now), "orders")):
            expected[name] = expected.get(name, 0.0) + 1.0
    write = ShardWrite(shard=0, expected_epoch="e")
    delta.apply_to(write)
    assert write.kpi == expected
    assert delta.latest_day == max(day_of(t) for t in times)
    assert write.kpi_cutoff_day == max(day_of(t) for t in times) - 89


def test_a_customers_events_on_one_day_make_one_run_and_a_new_day_another() -> None:
    delta = KpiDelta()
    noon = (DAY0 + 0.5) * DAY_S
    delta.add_events(None, _ordered("c", 1), noon)
    delta.add_events(_ordered("c", 1), _ordered("c", 3), noon + 60)
    delta.add_events(_ordered("c", 3), _ordered("c", 4), noon + DAY_S)
    write = ShardWrite(shard=0, expected_epoch="e")
    delta.apply_to(write)
    assert write.kpi == {
        "a:orders": 4.0,
        day_field(DAY0, "orders"): 3.0,
        day_field(DAY0 + 1, "orders"): 1.0,
    }


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_time_that_is_no_day_is_refused_as_before(bad: float) -> None:
    delta = KpiDelta()
    delta.add_events(None, _ordered("c", 1), DAY0 * DAY_S)
    with pytest.raises((ValueError, OverflowError)):
        delta.add_events(None, _ordered("d", 1), bad)
