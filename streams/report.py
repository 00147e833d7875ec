"""A customer's state and scores as a plain report, for the CLI and the web API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scoring.config import ScoringConfig
from scoring.scores import LEVEL_NAMES, churn_risk, engagement_score, momentum
from scoring.state import CustomerState


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, tz=UTC).isoformat()


def customer_report(state: CustomerState, now: float, config: ScoringConfig) -> dict[str, Any]:
    at = max(now, state.last_seen)
    churn = churn_risk(state, at, config)
    return {
        "customer_id": state.customer_id,
        "as_of": _iso(at),
        "engagement_score": round(engagement_score(state, at, config), 2),
        "momentum": round(momentum(state, at, config), 3),
        "churn_risk": round(churn.churn_risk, 4),
        "churn_level_alerted": LEVEL_NAMES.get(state.churn_level, "none"),
        "reasons": [r.model_dump() for r in churn.reasons],
        "first_seen": _iso(state.first_seen),
        "last_seen": _iso(state.last_seen),
        "counts": dict(state.counts),
        "next_check_at": _iso(state.next_check_at),
    }
