"""scoring.stored reads the fields settling needs from a stored state, without decoding the
rest: each must be the value ``decode`` gives, to the bit, for any state in the compact
form; any other blob is left to ``decode`` (None), which reads it or says what is wrong."""

from __future__ import annotations

import math
from typing import Any

import pytest
from compact_states import compact_states
from hypothesis import given, settings

from scoring.codec import decode, encode
from scoring.names import TIERS
from scoring.scores import open_tickets
from scoring.state import CustomerState
from scoring.stored import CheckInputs, check_inputs


def expected_inputs(state: CustomerState) -> CheckInputs:
    """The definition: what settling reads of the decoded state."""
    return CheckInputs(
        state.churn_level,
        state.next_check_at,
        state.check_exact,
        state.evaluated_at,
        state.landmark,
        state.last_seen,
        state.decayed.get("short", 0.0),
        state.decayed.get("long", 0.0),
        state.decayed.get("bad", 0.0),
        open_tickets(state),
        state.last_alert_at.get("churn_risk"),
        state.purchase_days,
        state.first_purchase_day,
        state.last_purchase_day,
    )


def same_value(a: Any, b: Any) -> bool:
    """Equal and of the same type; floats to the bit (0.0 and -0.0 differ, NaN is NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.copysign(1.0, a) == math.copysign(1.0, b) and (a == b or (a != a and b != b))
    return bool(a == b)


def assert_same_inputs(got: CheckInputs | None, state: CustomerState) -> None:
    assert got is not None
    want = expected_inputs(state)
    for name, a, b in zip(CheckInputs._fields, got, want, strict=True):
        assert same_value(a, b), (name, a, b)


@settings(max_examples=500, deadline=None)
@given(state=compact_states())
def test_any_compact_state_gives_the_decoded_fields(state: CustomerState) -> None:
    raw = encode(state)
    assert_same_inputs(check_inputs(raw), decode(raw))


def test_the_blocks_it_reads_are_where_decode_reads_them() -> None:
    """Not vacuous: every field settling reads present, absent, and next to others."""
    state = CustomerState(
        customer_id="c-1",
        landmark=86_400.0,
        decayed={"short": 1.25, "long": -0.0, "bad": 3.5, "hits": 2.0, "play_days": 9.0},
        counts={"events": 300, "tickets_opened": 5, "tickets_resolved": 2, "shares": 1},
        last_seen=90_000.0,
        churn_level=1,
        last_alert_at={"churn_risk": 88_000.0, "low_csat": 1.0},
        next_check_at=95_000.0,
        check_exact=False,
        evaluated_at=91_000.0,
        recent_events={"00112233aabb": 90_000.0},
        first_purchase_day=1,
        last_purchase_day=4,
        purchase_days=3,
        session=7,
    )
    got = check_inputs(encode(state))
    assert got == CheckInputs(
        churn_level=1,
        next_check_at=95_000.0,
        check_exact=False,
        evaluated_at=91_000.0,
        landmark=86_400.0,
        last_seen=90_000.0,
        short=1.25,
        long=-0.0,
        bad=3.5,
        open_tickets=3,
        churn_alert_at=88_000.0,
        purchase_days=3,
        first_purchase_day=1,
        last_purchase_day=4,
    )
    assert got is not None and math.copysign(1.0, got.long) == -1.0
    bare = CustomerState("c", 0.0, counts={"tickets_resolved": 4})
    assert check_inputs(encode(bare)) == CheckInputs(
        0, None, True, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, None, 0, -1, -1
    )


def test_blobs_it_does_not_read_are_left_to_decode() -> None:
    state = CustomerState("c", 0.0, decayed={"short": 1.0}, next_check_at=5.0, check_exact=False)
    raw = encode(state)
    assert check_inputs(raw) is not None
    # names outside the fixed orders (extras), and the JSON form: decode reads them
    extras = encode(state.evolve(decayed={"short": 1.0, "legacy-feature": 2.0}))
    assert check_inputs(extras) is None
    assert decode(extras).decayed["legacy-feature"] == 2.0
    assert check_inputs(b'{"c": "c"}') is None
    # malformed: decode says what is wrong
    for bad, reason in (
        (raw[:-1], "truncated"),
        (raw + b"\0", "trailing"),
        (b"\x09" + raw[1:], "version"),
        (raw[:3] + b"\x03" + raw[4:], "count width"),
        (raw[:20], "truncated"),
    ):
        assert check_inputs(bad) is None
        with pytest.raises(ValueError, match=reason):
            decode(bad)
    active = encode(state.evolve(tier="loyal"))
    assert check_inputs(active) is not None
    corrupt_tier = active[:-1] + bytes((len(TIERS),))
    assert check_inputs(corrupt_tier) is None
    with pytest.raises(ValueError, match="corrupt"):
        decode(corrupt_tier)
    # an id that is not UTF-8 fails as decoding it does
    broken = encode(CustomerState("ab", 0.0)).replace(b"ab", b"\xff\xfe")
    with pytest.raises(UnicodeDecodeError):
        decode(broken)
    with pytest.raises(UnicodeDecodeError):
        check_inputs(broken)
