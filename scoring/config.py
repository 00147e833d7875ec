"""The scoring configuration: weights, half-lives, thresholds, intervention rules.

Loaded from TOML (the shipped ``default.toml`` unless a path is given) into frozen,
validated models, so a typo in a weight fails at start, naming the key.
"""

from __future__ import annotations

import tomllib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scoring.model import ModelParams
from scoring.names import (
    ACTIVITY_LONG,
    ACTIVITY_SHORT,
    BAD_EXPERIENCES,
    DECAYED_FEATURES,
    SCORED_FEATURES,
)
from scoring.state import DAY_S

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Severity = Literal["low", "medium", "high"]
Subscore = Literal["emotional", "contextual", "convenience", "social", "transactional", "campaign"]
SUBSCORES: tuple[Subscore, ...] = (
    "emotional",
    "contextual",
    "convenience",
    "social",
    "transactional",
    "campaign",
)
PROFILES = ("retail", "gaming", "subscription")
# Decayed sums a clickstream type can feed (see scoring/features.py).
CLICK_FEATURES = (
    "product_views",
    "carts",
    "searches",
    "campaign",
    "shares",
    "referrals",
    "incentives",
    "deposits",
    "withdrawals",
    "plays",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureWeight(_Frozen):
    """How one feature enters the engagement score (scoring/engagement.py)."""

    subscore: Subscore
    weight: NonNegative = 1.0
    # For counts and amounts: the decayed value at which the feature's term reaches 63%
    # (1 - 1/e) of its maximum, so no single feature can dominate its sub-score.
    saturation: Positive = 1.0


class EngagementConfig(_Frozen):
    # Activity weights: what one event of each type adds to the momentum levels.
    generic_weight: NonNegative = 1.0
    weights: dict[str, NonNegative] = Field(default_factory=dict)
    # Default half-life of every decayed feature, and overrides by feature name.
    half_life_days: Positive = 30.0
    feature_half_life_days: dict[str, Positive] = Field(default_factory=dict)
    # Weight of each sub-score in the engagement score (normalised to sum to 1).
    subscores: dict[Subscore, NonNegative] = Field(default_factory=dict)
    features: dict[str, FeatureWeight] = Field(default_factory=dict)
    # Clickstream types feeding a decayed feature, beyond the built-in ones.
    event_features: dict[str, str] = Field(default_factory=dict)
    # An order without session_id converts the session whose last event is this recent.
    session_timeout_minutes: Positive = 30.0

    def weight(self, event_type: str) -> float:
        return self.weights.get(event_type, self.generic_weight)

    @model_validator(mode="after")
    def _known_names(self) -> EngagementConfig:
        for name in self.features:
            if name not in SCORED_FEATURES:
                known = ", ".join(SCORED_FEATURES)
                raise ValueError(f"engagement.features.{name}: unknown feature (known: {known})")
        for name in self.feature_half_life_days:
            if name not in DECAYED_FEATURES:
                raise ValueError(f"engagement.feature_half_life_days.{name}: unknown feature")
        for kind, name in self.event_features.items():
            if name not in CLICK_FEATURES:
                known = ", ".join(CLICK_FEATURES)
                raise ValueError(
                    f"engagement.event_features.{kind}: {name!r} is not one of {known}"
                )
        if self.features and sum(self.subscores.values()) <= 0:
            raise ValueError("engagement.subscores: at least one weight must be > 0")
        return self


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
    recency_weight: NonNegative = 0.35
    # Weight of 1 - p_alive (BG/NBD); without a fit, or before a customer's second purchase
    # day, it goes to the recency term instead.
    alive_weight: NonNegative = 0.25
    momentum_weight: NonNegative = 0.25
    bad_experience_weight: NonNegative = 0.15
    recency_half_life_days: Positive = 14.0
    bad_experience_half_life_days: Positive = 7.0
    bad_experience_saturation: Positive = 2.0
    # An unresolved support ticket weighs like this many fresh bad experiences, undecayed.
    open_ticket_weight: NonNegative = 0.5
    thresholds: ChurnThresholds = ChurnThresholds()

    @model_validator(mode="after")
    def _weights_keep_risk_in_unit_range(self) -> ChurnConfig:
        total = (
            self.recency_weight
            + self.alive_weight
            + self.momentum_weight
            + self.bad_experience_weight
        )
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


class TierConfig(_Frozen):
    """RFM-style tiers; recency counts from the last purchase (the last activity for a
    customer who never bought)."""

    champion_min_orders: Annotated[int, Field(ge=1)] = 5
    champion_min_spend: NonNegative = 300.0
    champion_max_days: Positive = 30.0
    loyal_min_orders: Annotated[int, Field(ge=1)] = 3
    at_risk_after_days: Positive = 45.0
    hibernating_after_days: Positive = 90.0
    lost_after_days: Positive = 180.0

    @model_validator(mode="after")
    def _ordered(self) -> TierConfig:
        if not (
            self.champion_max_days
            <= self.at_risk_after_days
            < self.hibernating_after_days
            < self.lost_after_days
        ):
            raise ValueError(
                "tiers: need champion_max_days <= at_risk_after_days < hibernating_after_days"
                " < lost_after_days"
            )
        return self


class LoyaltyConfig(_Frozen):
    """The per-customer loyalty index: recommendation, repurchase and upsell, in the spirit
    of the Customer Loyalty Index (their weighted mean, 0..100)."""

    recommendation_weight: NonNegative = 1.0
    repurchase_weight: NonNegative = 1.0
    upsell_weight: NonNegative = 1.0
    # Repeat purchase days / distinct products bought at which the term reaches 63%.
    repurchase_saturation: Positive = 3.0
    upsell_saturation: Positive = 5.0


class ClvConfig(_Frozen):
    horizon_days: Positive = 365.0
    annual_discount: Annotated[float, Field(ge=0, lt=1)] = 0.1
    steps: Annotated[int, Field(ge=1, le=120)] = 12
    # The simple form, before a fit: value per year x expected lifespan.
    expected_lifespan_years: NonNegative = 3.0
    # Spend is annualised over at least this many days, so a first order is not x365.
    min_tenure_days: Positive = 30.0


class ScoringConfig(_Frozen):
    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, ignored_types=(cached_property,)
    )

    profile: Literal["retail", "gaming", "subscription"] = "retail"
    engagement: EngagementConfig = EngagementConfig()
    momentum: MomentumConfig = MomentumConfig()
    churn: ChurnConfig = ChurnConfig()
    bad_experiences: dict[str, Severity] = Field(default_factory=dict)
    interventions: InterventionConfig = InterventionConfig()
    dedup: DedupConfig = DedupConfig()
    tiers: TierConfig = TierConfig()
    loyalty: LoyaltyConfig = LoyaltyConfig()
    clv: ClvConfig = ClvConfig()
    # BG/NBD and Gamma-Gamma parameters from a fit; not part of the TOML (see with_model).
    model: ModelParams = Field(default_factory=ModelParams, exclude=True)

    def with_model(self, params: ModelParams) -> ScoringConfig:
        """The same configuration scoring with fitted model parameters."""
        return self.model_copy(update={"model": params})

    @cached_property
    def half_lives_s(self) -> dict[str, float]:
        """Half-life in seconds of every decayed feature (computed once per config)."""
        e = self.engagement
        out = {
            name: e.feature_half_life_days.get(name, e.half_life_days) * DAY_S
            for name in DECAYED_FEATURES
        }
        out[ACTIVITY_SHORT] = self.momentum.short_half_life_days * DAY_S
        out[ACTIVITY_LONG] = self.momentum.long_half_life_days * DAY_S
        out[BAD_EXPERIENCES] = self.churn.bad_experience_half_life_days * DAY_S
        return out


def _profile_text(name: str) -> str:
    file = "default.toml" if name == "retail" else f"{name}.toml"
    return resources.files("scoring").joinpath(file).read_text("utf-8")


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def parse_config(text: str) -> ScoringConfig:
    """A scoring TOML document, read over the shipped profile it names (``profile =
    "gaming"``; retail when absent): tables merge key by key, so a file only needs the keys
    it changes (set a weight to 0 to switch a shipped one off)."""
    raw = tomllib.loads(text)
    profile = raw.get("profile", "retail")
    if profile not in PROFILES:
        raise ValueError(f"profile: {profile!r} is not one of {', '.join(PROFILES)}")
    return ScoringConfig.model_validate(_merged(tomllib.loads(_profile_text(profile)), raw))


def load_profile(name: str) -> ScoringConfig:
    """A shipped profile: retail (the default), gaming or subscription."""
    if name not in PROFILES:
        raise ValueError(f"profile: {name!r} is not one of {', '.join(PROFILES)}")
    return ScoringConfig.model_validate(tomllib.loads(_profile_text(name)))


def load_config(path: Path | None = None) -> ScoringConfig:
    """Parse a scoring TOML file; ``None`` loads the shipped default (retail)."""
    if path is None:
        return load_profile("retail")
    return parse_config(path.read_text("utf-8"))
