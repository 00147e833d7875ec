"""Any customer state the compact form holds without extras (scoring/codec.py), every
block present or not: for the tests of what reads or writes parts of a stored state in
place (scoring.stored, codec.encode_evaluated)."""

from __future__ import annotations

from hypothesis import strategies as st

from scoring.names import ALERT_KINDS, COUNT_NAMES, DECAYED_FEATURES, TIERS
from scoring.state import CustomerState

any_float = st.floats(allow_nan=True, allow_infinity=True)
# The decayed features settling reads and a few it skips, in and out of the mask.
decayed_names = st.sampled_from(["short", "long", "bad", "sessions", "hits", DECAYED_FEATURES[-1]])
count_names = st.sampled_from(
    ["events", "tickets_opened", "tickets_resolved", "responses", COUNT_NAMES[-1]]
)
# Widths 1, 2, 4 and 8 of the counts block.
count_value = st.one_of(
    st.integers(-128, 127), st.integers(-(2**31), 2**31 - 1), st.integers(-(2**63), 2**63 - 1)
)
int32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def compact_states(draw: st.DrawFn) -> CustomerState:
    """Any state the compact form holds without extras: every block present or not."""
    times = draw(st.lists(any_float, min_size=6, max_size=6))
    buyer = draw(st.booleans())
    activity = draw(st.booleans())
    n_recent = draw(st.integers(0, 4))
    return CustomerState(
        customer_id=draw(st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)),
        landmark=times[0],
        decayed=draw(st.dictionaries(decayed_names, any_float)),
        counts=draw(st.dictionaries(count_names, count_value)),
        first_seen=times[1],
        last_seen=times[2],
        churn_risk=times[3],
        churn_level=draw(st.integers(0, 255)),
        churn_alerts=draw(st.integers(0, 2**32 - 1)),
        last_alert_at=draw(st.dictionaries(st.sampled_from(ALERT_KINDS), any_float)),
        next_check_at=draw(st.one_of(st.none(), st.floats(allow_nan=False))),
        check_exact=draw(st.booleans()),
        evaluated_at=times[4],
        recent_events={f"{i:012x}": times[5] + i for i in range(n_recent)},
        first_purchase_day=draw(int32) if buyer else -1,
        last_purchase_day=draw(int32) if buyer else -1,
        purchase_days=draw(int32) if buyer else 0,
        spend=1.5 if buyer else 0.0,
        session=draw(st.integers(0, 2**32 - 1)) if activity else 0,
        last_nps=draw(st.integers(-1, 10)) if activity else -1,
        tier=draw(st.sampled_from(TIERS)) if activity else "",
    )
