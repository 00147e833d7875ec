"""A customer's state and scores as a plain report, for the CLI and the web API: every
score with the reasons behind it (`engagement customer <id>`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.alerts import Reason
from scoring.config import ScoringConfig
from scoring.scores import (
    LEVEL_NAMES,
    alive_inputs,
    churn_risk,
    engagement,
    momentum,
)
from scoring.state import DAY_S, CustomerState
from scoring.value import customer_clv, loyalty, tier_of, tier_reasons


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, tz=UTC).isoformat()


def _reasons(reasons: list[Reason] | tuple[Reason, ...]) -> list[dict[str, Any]]:
    return [
        {"factor": r.factor, "detail": r.detail, "contribution": round(r.contribution, 4)}
        for r in reasons
    ]


def _momentum_reasons(state: CustomerState, at: float, config: ScoringConfig) -> list[Reason]:
    """momentum = recent rate / usual rate - 1, bounded to -1..1."""
    value = momentum(state, at, config)
    if value == 0.0:
        return [Reason(factor="no_history", detail="no activity yet", contribution=0.0)]
    ratio = value + 1.0
    m = config.momentum
    return [
        Reason(
            factor="recent_vs_usual",
            detail=f"activity over ~{m.short_half_life_days:g} days at {100 * ratio:.0f}% of "
            f"the ~{m.long_half_life_days:g}-day rate",
            contribution=ratio,
        ),
        Reason(factor="baseline", detail="the usual rate itself", contribution=-1.0),
    ]


def _alive(state: CustomerState, at: float, config: ScoringConfig) -> dict[str, Any]:
    inputs = alive_inputs(state, at, config)
    if inputs is None:
        why = "no BG/NBD fit" if config.model.bgnbd is None else "fewer than two purchase days"
        return {"value": None, "reasons": [{"factor": "p_alive", "detail": why}]}
    assessment = churn_risk(state, at, config)
    unit = inputs.params.time_unit_days
    detail = (
        f"x={inputs.x} repeat purchase days, t_x={inputs.t_x * unit:.0f} and "
        f"T={inputs.T * unit:.0f} days from the first purchase"
    )
    value = assessment.p_alive
    return {
        "value": None if value is None else round(value, 4),
        "reasons": [{"factor": "bgnbd", "detail": detail, "contribution": value}],
    }


def customer_report(state: CustomerState, now: float, config: ScoringConfig) -> dict[str, Any]:
    at = max(now, state.last_seen)
    churn = churn_risk(state, at, config)
    eng = engagement(state, at, config)
    loyal = loyalty(state, config)
    clv, clv_reason = customer_clv(state, at, config)
    tier = tier_of(state, at, config)
    mom = momentum(state, at, config)
    return {
        "customer_id": state.customer_id,
        "as_of": _iso(at),
        "profile": config.profile,
        "engagement_score": round(eng.score, 2),
        "momentum": round(mom, 3),
        "churn_risk": round(churn.churn_risk, 4),
        "churn_level_alerted": LEVEL_NAMES.get(state.churn_level, "none"),
        # the churn risk's reasons (kept at the top level for existing readers)
        "reasons": _reasons(churn.reasons),
        "p_alive": None if churn.p_alive is None else round(churn.p_alive, 4),
        "tier": tier,
        "loyalty": round(loyal.index, 2),
        "clv": round(clv, 2),
        "scores": {
            "engagement": {
                "value": round(eng.score, 2),
                "subscores": {k: round(v, 2) for k, v in eng.subscores.items()},
                "reasons": _reasons(eng.reasons()),
            },
            "momentum": {
                "value": round(mom, 3),
                "reasons": _reasons(_momentum_reasons(state, at, config)),
            },
            "churn_risk": {"value": round(churn.churn_risk, 4), "reasons": _reasons(churn.reasons)},
            "p_alive": _alive(state, at, config),
            "loyalty": {"value": round(loyal.index, 2), "reasons": _reasons(loyal.reasons)},
            "tier": {"value": tier, "reasons": _reasons(tier_reasons(state, at))},
            "clv": {"value": round(clv, 2), "reasons": _reasons([clv_reason])},
        },
        "first_seen": _iso(state.first_seen),
        "last_seen": _iso(state.last_seen),
        "days_silent": round(max(0.0, at - state.last_seen) / DAY_S, 1),
        "counts": dict(state.counts),
        "distinct_products": state.distinct_products(),
        "spend": round(state.spend, 2),
        "purchase_days": state.purchase_days,
        "next_check_at": _iso(state.next_check_at),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one line per fact, each score followed by its reasons."""
    lines = []
    for name, value in report.items():
        if name in ("scores", "reasons"):
            continue
        lines.append(f"{name:>20}: {value}")
    for score, body in report["scores"].items():
        lines.append(f"\n{score} = {body['value']}")
        for sub, v in body.get("subscores", {}).items():
            lines.append(f"    {sub:<14} {v:6.2f}")
        for r in body["reasons"]:
            c = r.get("contribution")
            share = f"{c:+9.4f}" if isinstance(c, int | float) else " " * 9
            lines.append(f"  {share}  {r['factor']}: {r['detail']}")
    return "\n".join(lines)
