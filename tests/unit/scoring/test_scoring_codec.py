"""The compact encoding of a customer's state: exact round trips, and its size."""

from __future__ import annotations

import itertools
import struct
from datetime import UTC, datetime
from typing import get_args

import pytest
from compact_states import compact_states
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.alerts import InterventionKind
from schemas.events import InputEvent
from scoring import codec
from scoring.codec import _HEAD, decode, encode, encode_evaluated
from scoring.config import load_config
from scoring.engine import apply_event, evaluate_due
from scoring.names import ALERT_KINDS, COUNT_NAMES, DECAYED_FEATURES
from scoring.state import DAY_S, CustomerState
from streams.dev.simulator import encode as encode_event
from streams.dev.simulator import generate
from streams.pipeline.intake import Decoder, Record

CONFIG = load_config()
T0 = datetime(2026, 1, 5, tzinfo=UTC)

finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    decayed=st.dictionaries(st.sampled_from(["short", "long", "spend", "bounces", "x-ü"]), finite),
    counts=st.dictionaries(
        st.sampled_from(["events", "orders", "bounces", "response_s", "legacy"]),
        st.integers(-(2**40), 2**40),
    ),
    times=st.lists(finite, min_size=5, max_size=5),
    bitmap=st.integers(0, 2**64 - 1),
    recent=st.dictionaries(
        st.binary(min_size=8, max_size=8).map(bytes.hex), st.integers(-(2**31), 2**31)
    ),
    check=st.one_of(st.none(), finite),
)
def test_any_state_round_trips_exactly(
    decayed: dict[str, float],
    counts: dict[str, int],
    times: list[float],
    bitmap: int,
    recent: dict[str, int],
    check: float | None,
) -> None:
    landmark = float(int(times[0]) // 86_400 * 86_400)
    state = CustomerState(
        customer_id="c-ü/1",
        landmark=landmark,
        decayed=decayed,
        counts=counts,
        first_seen=times[1],
        last_seen=times[2],
        churn_risk=0.123456789,
        churn_level=1,
        churn_alerts=300,
        last_alert_at={"churn_risk": times[3], "loyalty_milestone": times[4], "odd": 1.5},
        next_check_at=check,
        check_exact=check is None,
        evaluated_at=times[4],
        recent_events={d: landmark + s for d, s in recent.items()},
        first_purchase_day=20_000,
        last_purchase_day=20_400,
        spend=1234.56,
        purchase_days=7,
        purchase_day_bits=bitmap >> 1,
        first_day_spend=0.1,
        session=2**32 - 1,
        session_start=times[2],
        session_hits=1,
        session_converted=True,
        last_nps=10,
        last_play_day=20_401,
        products_bought=bitmap,
        items_seen=bitmap >> 3,
        categories=1,
        tier="at_risk",
        clv=99.5,
    )
    raw = encode(state)
    assert decode(raw) == state
    assert encode(decode(raw)) == raw


def test_a_fresh_state_and_bad_input() -> None:
    state = CustomerState.new("c", T0.timestamp() + 0.25)
    assert codec.decode(codec.encode(state)) == state
    raw = codec.encode(state)
    with pytest.raises(ValueError, match="truncated"):
        decode(raw[:-3])
    with pytest.raises(ValueError, match="trailing"):
        decode(raw + b"\0")
    with pytest.raises(ValueError, match="version"):
        decode(b"\x09" + raw[1:])
    odd = state.evolve(recent_events={"0123456789abcdef": state.last_seen + 0.5, "00" * 8: 1.0})
    assert decode(encode(odd)) == odd  # not whole seconds: stored as float64, still exact
    with pytest.raises(ValueError, match="recent_events"):
        encode(state.evolve(recent_events={"0123456789abcdef": 1.0, "00": 2.0}))


def simulated_states(customers: int, days: float) -> list[CustomerState]:
    decoder = Decoder("clickstream", "purchases", "feedback")
    states: dict[str, CustomerState] = {}
    for i, e in enumerate(generate(customers, days, 3, T0)):
        event: InputEvent = decoder.decode(Record(e.source, 0, i, None, encode_event(e), {}))
        t = event.occurred_at.timestamp()
        states[e.customer_id] = apply_event(states.get(e.customer_id), event, t, t, CONFIG).state
    end = T0.timestamp() + days * DAY_S
    return [evaluate_due(s, end, end, CONFIG).state for s in states.values()]


def test_simulated_customers_round_trip_and_stay_small() -> None:
    states = simulated_states(60, 45)
    sizes = []
    for state in states:
        raw = codec.encode(state)
        assert codec.decode(raw) == state
        sizes.append((state.count("events"), len(raw)))
    typical = [size for events, size in sizes if 24 <= events <= 60]
    assert typical, sizes
    assert max(typical) < 400, sorted(typical)
    assert max(size for _, size in sizes) < 600


def test_distinct_products_estimate() -> None:
    state = CustomerState.new("c", 0.0)
    from scoring.state import bit_of

    bitmap = 0
    for n in itertools.count(1):
        bitmap |= bit_of(f"p{n}")
        if n in (1, 5, 20):
            estimate = state.evolve(products_bought=bitmap).distinct_products()
            assert abs(estimate - n) <= max(1, n // 4), (n, estimate)
        if n == 20:
            break


def test_a_state_stored_as_json_before_is_still_read() -> None:
    legacy = (
        b'{"c":"c9","L":1767225600.0,"d":{"eng":3.5,"short":1.25},"n":{"events":4},'
        b'"f":1767230000.5,"l":1767240000.0,"r":0.1,"v":0,"a":1,"t":{"churn_risk":1767235000.0},'
        b'"x":1767300000.0,"k":false,"e":1767240000.0,"i":{"00112233445566ff":1767240000.0}}'
    )
    state = codec.decode(legacy)
    assert state.customer_id == "c9" and state.decayed == {"eng": 3.5, "short": 1.25}
    assert state.count("events") == 4 and not state.check_exact
    assert codec.decode(codec.encode(state)) == state


def test_the_codec_knows_every_alert_kind_the_schemas_define() -> None:
    # ALERT_KINDS is the stored bit order of last_alert_at, so it is spelled out rather
    # than taken from the schema's Literal (reordering that must not change the format);
    # a kind added to the schema must be appended here too.
    assert set(ALERT_KINDS) == {"churn_risk", *get_args(InterventionKind)}
    assert len(set(ALERT_KINDS)) == len(ALERT_KINDS)


def test_the_front_of_an_encoding_is_its_parts_packed_one_by_one() -> None:
    # encode packs header, id and the three fixed-order blocks with one struct: pinned to
    # the layout the module docstring gives, part by part.
    states = simulated_states(40, 20)
    states.append(states[0].evolve(decayed={**states[0].decayed, "legacy": 2.5}))
    states.append(states[0].evolve(counts={"events": 2**40, "orders": -3}))
    for state in states:
        raw = encode(state)
        head = _HEAD.unpack_from(raw)
        width, cid_len = head[3], head[10]
        cid = state.customer_id.encode()
        assert cid_len == len(cid)
        d_values = [state.decayed[n] for n in DECAYED_FEATURES if n in state.decayed]
        c_values = [state.counts[n] for n in COUNT_NAMES if n in state.counts]
        a_values = [state.last_alert_at[n] for n in ALERT_KINDS if n in state.last_alert_at]
        code = {1: "b", 2: "h", 4: "i", 8: "q"}[width]
        front = b"".join(
            [
                _HEAD.pack(*head),
                cid,
                struct.pack(f"<{len(d_values)}d", *d_values),
                struct.pack(f"<{len(c_values)}{code}", *c_values),
                struct.pack(f"<{len(a_values)}d", *a_values),
            ]
        )
        assert raw.startswith(front)
        assert decode(raw) == state


any_time = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def evaluations(draw: st.DrawFn) -> tuple[CustomerState, CustomerState]:
    """A decoded state and a state an evaluation could make of it: every field it sets
    (``engine._EVALUATED``) and a pruned duplicate window, the decayed sums and counts
    left as they are (the same dicts)."""
    before = decode(encode(draw(compact_states())))
    recent = before.recent_events
    after = before.evolve(
        churn_risk=draw(any_time),
        churn_level=draw(st.integers(0, 2)),
        churn_alerts=draw(st.integers(0, 2**32 - 1)),
        last_alert_at=draw(st.dictionaries(st.sampled_from(ALERT_KINDS), any_time)),
        evaluated_at=draw(any_time),
        tier=draw(st.sampled_from(["", "champion", "at_risk"])),
        clv=draw(st.one_of(st.just(0.0), any_time)),
        next_check_at=draw(st.one_of(st.none(), st.floats(allow_nan=False))),
        check_exact=draw(st.booleans()),
        recent_events=dict(list(recent.items())[: draw(st.integers(0, len(recent)))]),
    )
    return before, after


@settings(max_examples=500, deadline=None)
@given(case=evaluations())
def test_an_evaluated_state_is_encoded_from_its_stored_blob_as_a_whole(
    case: tuple[CustomerState, CustomerState],
) -> None:
    before, after = case
    assert encode_evaluated(encode(before), before, after) == encode(after)


def test_encoding_an_evaluated_state_copies_the_unchanged_blocks_of_the_blob() -> None:
    before = decode(encode(simulated_states(8, 20)[0]))
    after = before.evolve(churn_risk=0.5, tier="at_risk", last_alert_at={"churn_risk": 1e9})
    raw = encode(before)
    # A decayed sum's bytes altered in the blob show through: they are copied, not packed.
    at = _HEAD.size + len(before.customer_id.encode())
    altered = raw[:at] + struct.pack("<d", 123.25) + raw[at + 8 :]
    patched = encode_evaluated(altered, before, after)
    assert decode(patched).decayed[next(iter(before.decayed))] == 123.25
    assert decode(patched) == after.evolve(
        decayed={**before.decayed, next(iter(before.decayed)): 123.25}
    )
    # Anything else is encoded whole: new decayed sums or counts, the JSON form.
    assert encode_evaluated(altered, before, after.evolve(decayed=dict(before.decayed))) == (
        encode(after)
    )
    assert encode_evaluated(b'{"c": "x"}', before, after) == encode(after)
