"""The `engagement customer` report: every score with its reasons."""

from __future__ import annotations

import math

import pytest

from scoring.example import AS_OF, example_state
from scoring.state import CustomerState
from streams.tools.report import customer_report, format_report


def test_every_score_has_reasons_and_additive_ones_add_up() -> None:
    state, config = example_state()
    report = customer_report(state, AS_OF.timestamp(), config)
    scores = report["scores"]
    assert set(scores) == {
        "engagement",
        "momentum",
        "churn_risk",
        "p_alive",
        "loyalty",
        "tier",
        "clv",
    }
    for name in ("engagement", "churn_risk", "loyalty", "clv"):
        total = sum(r["contribution"] for r in scores[name]["reasons"])
        assert total == pytest.approx(scores[name]["value"], abs=0.01), name
    # momentum's reasons: recent rate over usual rate, minus the usual rate itself
    total = sum(r["contribution"] for r in scores["momentum"]["reasons"])
    assert total == pytest.approx(scores["momentum"]["value"], abs=1e-3)
    assert report["churn_risk"] == scores["churn_risk"]["value"]
    assert report["reasons"] == scores["churn_risk"]["reasons"]
    assert 0 < report["p_alive"] < 1 and report["tier"] == "promising"
    assert set(scores["engagement"]["subscores"]) == {
        "emotional", "contextual", "convenience", "social", "transactional", "campaign"
    }  # fmt: skip
    text = format_report(report)
    for name in scores:
        assert f"\n{name} = " in text
    assert "recency: no activity for 20.0 days" in text


def test_a_customer_without_purchases_or_fit() -> None:
    state, config = example_state()
    fresh = CustomerState.new("c0", state.first_seen)
    report = customer_report(fresh, fresh.first_seen, config.with_model(config.model.__class__()))
    assert report["p_alive"] is None and report["clv"] == 0.0
    assert report["scores"]["p_alive"]["reasons"][0]["detail"] == "no BG/NBD fit"
    assert math.isclose(report["engagement_score"], 0.0)
