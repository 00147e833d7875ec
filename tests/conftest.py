"""Fixtures every test directory shares."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from scoring.state import CustomerState


def _legacy_json(state: CustomerState) -> bytes:
    return orjson.dumps(
        {
            "c": state.customer_id,
            "L": state.landmark,
            "d": state.decayed,
            "n": state.counts,
            "f": state.first_seen,
            "l": state.last_seen,
            "r": state.churn_risk,
            "v": state.churn_level,
            "a": state.churn_alerts,
            "t": state.last_alert_at,
            "x": state.next_check_at,
            "k": state.check_exact,
            "e": state.evaluated_at,
            "i": state.recent_events,
        }
    )


@pytest.fixture(scope="session")
def legacy_json() -> Callable[[CustomerState], bytes]:
    """A state in the JSON form states were stored in before the compact encoding (still
    read, never written)."""
    return _legacy_json
