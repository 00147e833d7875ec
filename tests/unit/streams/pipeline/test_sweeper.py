"""streams.pipeline.sweeper.sweep_shard writes what decoding every due customer and running
engine.sweep_due on it writes (the sweep before settling read the stored fields alone):
the same blobs, check times, KPI deltas and alerts, customer by customer, to the byte."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring import codec
from scoring.codec import decode, encode, with_exact_check
from scoring.config import ScoringConfig, load_config
from scoring.engine import Alert, apply_event, sweep_due
from scoring.model import BgNbdParams, ModelParams
from scoring.state import DAY_S, CustomerState
from streams.dev.simulator import generate
from streams.pipeline.sweeper import commit_parts, sweep_shard
from streams.state.kpis import KpiDelta
from streams.state.store import ShardView, ShardWrite

RETAIL = load_config(None)
FITTED = RETAIL.with_model(ModelParams(bgnbd=BgNbdParams(r=0.25, alpha=4.0, a=0.8, b=2.4)))
START = datetime(2026, 3, 2, tzinfo=UTC)
MODELS: dict[str, type[InputEvent]] = {
    "clickstream": ClickstreamEvent,
    "purchases": PurchaseEvent,
    "feedback": FeedbackEvent,
}
VIEW = ShardView(shard=3, epoch="7", offsets={}, marks={}, customers={})


def simulated_states(config: ScoringConfig) -> list[CustomerState]:
    """40 simulated customers after 60 days, scored event by event."""
    events: dict[str, list[InputEvent]] = defaultdict(list)
    for e in generate(40, 60, 11, START):
        events[e.customer_id].append(MODELS[e.source].model_validate(e.payload))
    states = []
    for history in events.values():
        state: CustomerState | None = None
        for event in sorted(history, key=lambda e: e.occurred_at):
            t = event.occurred_at.timestamp()
            state = apply_event(state, event, t, t, config).state
        assert state is not None
        states.append(state)
    return states


def reference_sweep(
    blobs: dict[str, bytes], now: float, config: ScoringConfig
) -> tuple[ShardWrite, list[Alert]]:
    """The sweep as it was: every customer decoded and run through sweep_due."""
    write = ShardWrite(shard=VIEW.shard, expected_epoch=VIEW.epoch)
    alerts: list[Alert] = []
    kpi = KpiDelta()
    for customer_id, raw in blobs.items():
        state = decode(raw)
        result, checked = sweep_due(state, now, now, config)
        after = write.states[customer_id] = result.state
        if checked:
            kpi.add_evaluation(state, after, now)
            alerts.extend(result.alerts)
        elif after is state:
            if raw[:1] != b"{":
                write.encoded[customer_id] = raw
        else:
            patched = with_exact_check(raw, after.next_check_at)
            if patched is not None:
                write.encoded[customer_id] = patched
    if blobs:
        kpi.note_time(now)
    kpi.apply_to(write)
    return write, alerts


def stored_bytes(write: ShardWrite) -> dict[str, tuple[bytes, float | None]]:
    """What the commit writes of each customer (streams/state/store.py): blob and check time."""
    written = {
        c: (write.encoded.get(c) or codec.encode(s), s.next_check_at)
        for c, s in write.states.items()
    }
    assert not written.keys() & write.settled.keys(), "a customer written twice"
    return {**written, **write.settled}


@pytest.mark.parametrize("config", [RETAIL, FITTED], ids=["retail", "fitted"])
def test_the_sweep_writes_what_the_plain_sweep_writes(
    config: ScoringConfig, legacy_json: Callable[[CustomerState], bytes]
) -> None:
    states = simulated_states(config)
    blobs = {s.customer_id: encode(s) for s in states}
    # blobs the stored fields are not read from: the JSON form, and names outside the
    # fixed orders (extras)
    first, second = states[0], states[1]
    blobs["legacy"] = legacy_json(replace(first, customer_id="legacy"))
    blobs["extras"] = encode(replace(second, customer_id="extras", counts={"old-count": 3}))
    kinds: set[str] = set()
    end = START.timestamp() + 60 * DAY_S
    for days in (0.0, 1.0, 5.0, 20.0, 60.0):
        now = end + days * DAY_S
        write, alerts = sweep_shard(VIEW, blobs, now, now, config)
        expected, expected_alerts = reference_sweep(blobs, now, config)
        assert stored_bytes(write) == stored_bytes(expected)
        assert (write.kpi, write.kpi_cutoff_day) == (expected.kpi, expected.kpi_cutoff_day)
        assert alerts == expected_alerts
        for c, (blob, _) in write.settled.items():
            kinds.add("settled from the blob")
            assert decode(blob) == expected.states[c]
        for c in write.states:
            if c not in write.encoded:
                kinds.add("decoded, encoded in the commit")
            elif write.encoded[c] == blobs[c]:
                kinds.add("decoded, blob reused")
            elif blobs[c][:1] == b"{":
                kinds.add("the JSON form, evaluated and encoded whole")
            else:
                kinds.add("evaluated, encoded from the blob")
        if alerts:
            kinds.add("alerts")
    # guards against vacuity: every path ran
    assert kinds == {
        "settled from the blob",
        "decoded, blob reused",
        "the JSON form, evaluated and encoded whole",
        "evaluated, encoded from the blob",
        "alerts",
    }


def test_a_customer_settled_and_due_is_checked_as_before() -> None:
    """Settled from the blob, then due at once: the decoded state goes on from there."""
    state = simulated_states(RETAIL)[0]
    lower_bound = state.evolve(
        next_check_at=state.evaluated_at + 60.0, check_exact=False, churn_level=0
    )
    blobs = {state.customer_id: encode(lower_bound)}
    now = state.evaluated_at + 400 * DAY_S
    write, alerts = sweep_shard(VIEW, blobs, now, now, RETAIL)
    expected, expected_alerts = reference_sweep(blobs, now, RETAIL)
    assert stored_bytes(write) == stored_bytes(expected)
    assert write.kpi == expected.kpi and write.kpi
    assert alerts == expected_alerts and alerts


def test_purchases_the_model_refuses_fail_the_sweep_as_before() -> None:
    state = next(s for s in simulated_states(FITTED) if s.purchase_days >= 2)
    # a last purchase before the first: BG/NBD's t_x < 0
    refused = state.evolve(
        last_purchase_day=state.first_purchase_day - 3,
        next_check_at=state.evaluated_at + 60.0,
        check_exact=False,
        churn_level=0,
    )
    blobs = {state.customer_id: encode(refused)}
    now = state.evaluated_at + 90 * DAY_S
    with pytest.raises(ValueError) as plain:
        reference_sweep(blobs, now, FITTED)
    with pytest.raises(ValueError) as swept:
        sweep_shard(VIEW, blobs, now, now, FITTED)
    assert str(swept.value) == str(plain.value)


def test_a_page_is_committed_in_parts_of_at_most_the_size_in_order() -> None:
    blobs = {f"c{i}": bytes([i]) for i in range(7)}
    parts = list(commit_parts(blobs, 3))
    assert [list(p) for p in parts] == [["c0", "c1", "c2"], ["c3", "c4", "c5"], ["c6"]]
    assert {c: b for p in parts for c, b in p.items()} == blobs
    assert list(commit_parts(blobs, 7)) == [blobs]
    assert list(commit_parts({}, 3)) == [{}]


def test_the_last_part_is_of_at_most_the_last_size() -> None:
    blobs = {f"c{i}": bytes([i]) for i in range(8)}
    assert [len(p) for p in commit_parts(blobs, 3, last=2)] == [3, 3, 2]
    assert [len(p) for p in commit_parts(blobs, 3, last=1)] == [3, 3, 1, 1]
    assert [len(p) for p in commit_parts(blobs, 4, last=1)] == [4, 3, 1]
    assert [len(p) for p in commit_parts(blobs, 5, last=2)] == [5, 1, 2]
    assert [len(p) for p in commit_parts(blobs, 5, last=4)] == [5, 3]
    # never larger than the size, and one part when all fit in the last
    assert [len(p) for p in commit_parts(blobs, 3, last=9)] == [3, 3, 2]
    assert list(commit_parts(blobs, 10, last=8)) == [blobs]
    assert list(commit_parts({}, 3, last=1)) == [{}]
    parts = list(commit_parts(blobs, 3, last=1))
    assert [c for p in parts for c in p] == list(blobs)  # in order, each once
    page = dict.fromkeys(map(str, range(2_000)), b"")
    assert [len(p) for p in commit_parts(page, 1_000, last=250)] == [1_000, 750, 250]
