"""The scoring configuration: weights, half-lives, thresholds, intervention rules.

Loaded from TOML (the shipped ``default.toml`` unless a path is given) into frozen,
validated models, so a typo in a weight fails at start, naming the key.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Severity = Literal["low", "medium", "high"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EngagementConfig(_Frozen):
    generic_weight: NonNegative = 1.0
    saturation: Positive = 40.0
    half_life_days: Positive = 30.0
    weights: dict[str, NonNegative] = Field(default_factory=dict)

    def weight(self, event_type: str) -> float:
        return self.weights.get(event_type, self.generic_weight)


class MomentumConfig(_Frozen):
    short_half_life_days: Positive = 7.0
    long_half_life_days: Positive = 60.0

    @model_validator(mode="after")
    def _short_is_shorter(self) -> MomentumConfig:
        if self.short_half_life_days >= self.long_half_life_days:
            raise ValueError("momentum.short_half_life_days must be < long_half_life_days")
        return self


class ChurnThresholds(_Frozen):
    elevated: Annotated[float, Field(gt=0, le=1)] = 0.5
    high: Annotated[float, Field(gt=0, le=1)] = 0.75
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.1
    cooldown_days: NonNegative = 7.0
    max_check_interval_days: Positive = 30.0

    @model_validator(mode="after")
    def _ordered(self) -> ChurnThresholds:
        if self.high <= self.elevated:
            raise ValueError("churn.thresholds.high must be above elevated")
        return self


class ChurnConfig(_Frozen):
    recency_weight: NonNegative = 0.6
    momentum_weight: NonNegative = 0.25
    bad_experience_weight: NonNegative = 0.15
    recency_half_life_days: Positive = 14.0
    bad_experience_half_life_days: Positive = 7.0
    bad_experience_saturation: Positive = 2.0
    thresholds: ChurnThresholds = ChurnThresholds()

    @model_validator(mode="after")
    def _weights_keep_risk_in_unit_range(self) -> ChurnConfig:
        total = self.recency_weight + self.momentum_weight + self.bad_experience_weight
        if total > 1.0 + 1e-9:
            raise ValueError(f"churn weights add up to {total}, must be at most 1")
        return self


class InterventionRules(_Frozen):
    detractor_max_nps: Annotated[int, Field(ge=0, le=10)] = 6
    low_csat_max: Annotated[int, Field(ge=1, le=5)] = 2
    negative_review_max_rating: Annotated[int, Field(ge=1, le=5)] = 2
    negative_sentiment_max: Annotated[float, Field(ge=-1, le=1)] = -0.5


class InterventionConfig(_Frozen):
    max_trigger_age_days: Positive = 2.0
    cooldown_days: dict[str, NonNegative] = Field(default_factory=dict)
    actions: dict[str, str] = Field(default_factory=dict)
    rules: InterventionRules = InterventionRules()

    def cooldown_s(self, kind: str) -> float:
        return self.cooldown_days.get(kind, 1.0) * 86_400.0

    def action(self, kind: str) -> str:
        return self.actions.get(kind, "review_customer")


class DedupConfig(_Frozen):
    window_s: Positive = 86_400.0


class ScoringConfig(_Frozen):
    engagement: EngagementConfig = EngagementConfig()
    momentum: MomentumConfig = MomentumConfig()
    churn: ChurnConfig = ChurnConfig()
    bad_experiences: dict[str, Severity] = Field(default_factory=dict)
    interventions: InterventionConfig = InterventionConfig()
    dedup: DedupConfig = DedupConfig()


def load_config(path: Path | None = None) -> ScoringConfig:
    """Parse a scoring TOML file; ``None`` loads the shipped default."""
    if path is None:
        text = resources.files("scoring").joinpath("default.toml").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    return ScoringConfig.model_validate(tomllib.loads(text))
