"""Messages the scorer publishes to the alert topics."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Percent = Annotated[float, Field(ge=0.0, le=100.0)]
Tier = Literal["champion", "loyal", "promising", "at_risk", "hibernating", "lost"]


class Reason(BaseModel):
    """One factor behind a score, with its signed share of the score."""

    model_config = ConfigDict(frozen=True)

    factor: str
    detail: str
    contribution: float


class Trigger(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: Literal["event", "inactivity"]
    event_id: str | None


class ChurnRiskAlert(BaseModel):
    model_config = ConfigDict(frozen=True)

    alert_id: str
    customer_id: str
    kind: Literal["churn_risk"] = "churn_risk"
    level: Literal["elevated", "high"]
    churn_risk: Unit
    previous_churn_risk: Unit
    threshold: Unit
    engagement_score: Percent
    reasons: list[Reason]
    trigger: Trigger
    occurred_at: AwareDatetime
    emitted_at: AwareDatetime
    # Added later: absent from older alerts. p_alive is null before a BG/NBD fit or a
    # customer's second purchase day.
    p_alive: Unit | None = None
    tier: Tier | None = None
    clv: Annotated[float, Field(ge=0.0)] | None = None


class CustomerSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    engagement_score: Percent
    churn_risk: Unit
    p_alive: Unit | None = None
    tier: Tier | None = None
    clv: Annotated[float, Field(ge=0.0)] | None = None


InterventionKind = Literal[
    "detractor_feedback",
    "low_csat",
    "negative_review",
    "product_return",
    "bad_experience",
    "negative_sentiment",
    "loyalty_milestone",
]


class InterventionAlert(BaseModel):
    model_config = ConfigDict(frozen=True)

    alert_id: str
    customer_id: str
    kind: InterventionKind
    severity: Literal["low", "medium", "high"]
    recommended_action: str
    trigger_event_id: str
    occurred_at: AwareDatetime
    emitted_at: AwareDatetime
    customer: CustomerSnapshot
    reasons: list[Reason]
