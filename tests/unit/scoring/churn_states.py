"""Generated customer states for the churn terms and the check schedule: the features those
read, over their whole ranges (decayed sums of either sign, tickets, alert history,
purchase spans, including a last purchase before the first, which BG/NBD refuses)."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import strategies as st

from scoring.config import ScoringConfig
from scoring.names import ACTIVITY_LONG, ACTIVITY_SHORT, BAD_EXPERIENCES
from scoring.state import DAY_S, CustomerState

# Decayed sums as they occur (a subnormal one would make momentum divide by zero).
decayed_sum = st.one_of(st.just(0.0), st.floats(1e-9, 1e12), st.floats(-1e12, -1e-9))


@st.composite
def churn_states(
    draw: st.DrawFn,
    configs: Mapping[str, ScoringConfig],
    start: float,
    purchase_span_from: int = 0,
    resolved_tickets: bool = True,
) -> tuple[ScoringConfig, float, CustomerState]:
    """(config, time, state) with the state judged 400 days after ``start``."""
    config = configs[draw(st.sampled_from(sorted(configs)))]
    at = start + 400 * DAY_S
    day0 = int(start // DAY_S)
    counts = {"tickets_opened": draw(st.integers(0, 5))}
    if resolved_tickets:
        counts["tickets_resolved"] = draw(st.integers(0, 5))
    last_alert_days = draw(st.one_of(st.none(), st.floats(-30, 0)))
    first_day = draw(st.integers(-1, 400))
    purchase_span = draw(st.integers(purchase_span_from, 400))
    state = CustomerState(
        customer_id="c",
        landmark=at + draw(st.floats(-400, 0)) * DAY_S,
        decayed={
            ACTIVITY_SHORT: draw(decayed_sum),
            ACTIVITY_LONG: draw(decayed_sum),
            BAD_EXPERIENCES: draw(st.floats(0, 50)),
        },
        counts=counts,
        last_seen=at + draw(st.floats(-400, 0)) * DAY_S,
        churn_level=draw(st.integers(0, 2)),
        last_alert_at={} if last_alert_days is None else {"churn_risk": at + last_alert_days},
        evaluated_at=at,
        first_purchase_day=-1 if first_day < 0 else day0 + first_day,
        last_purchase_day=-1 if first_day < 0 else day0 + first_day + purchase_span,
        purchase_days=draw(st.integers(0, 40)),
    )
    return config, at, state
