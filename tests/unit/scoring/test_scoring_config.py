"""Loading the scoring configuration: the shipped default, custom files, clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from scoring.config import ScoringConfig, load_config, load_profile, parse_config
from scoring.model import BgNbdParams, ModelParams

DEFAULT_TOML = Path(__file__).parents[3] / "scoring" / "default.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scoring.toml"
    path.write_text(text, "utf-8")
    return path


def test_the_shipped_default_loads() -> None:
    config = load_config()
    raw = tomllib.loads(DEFAULT_TOML.read_text("utf-8"))
    assert config == ScoringConfig.model_validate(raw)
    assert config == load_config(DEFAULT_TOML)
    assert config.churn.thresholds.elevated == raw["churn"]["thresholds"]["elevated"]
    assert config.bad_experiences["payment_error"] == "high"
    assert config.engagement.weight("order") == 10.0
    assert config.engagement.weight("hologram_view") == config.engagement.generic_weight
    c = config.churn
    assert c.recency_weight + c.alive_weight + c.momentum_weight + c.bad_experience_weight <= 1.0
    # every intervention kind with a rule has an action and a cooldown
    assert set(config.interventions.actions) == set(config.interventions.cooldown_days)


def test_a_custom_file_loads_and_keeps_defaults_for_the_rest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[engagement]
half_life_days = 21.0

[churn.thresholds]
elevated = 0.4
high = 0.6

[bad_experiences]
tilt = "low"
""",
    )
    config = load_config(path)
    assert config.engagement.half_life_days == 21.0
    assert config.churn.thresholds.elevated == 0.4
    assert config.churn.thresholds.high == 0.6
    assert config.churn.thresholds.margin == 0.1
    # read over the retail profile, key by key
    assert config.bad_experiences == {**load_config().bad_experiences, "tilt": "low"}
    assert config.engagement.features == load_config().engagement.features
    assert config.momentum.short_half_life_days == 7.0


def test_churn_weights_above_one_are_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[churn]\nrecency_weight = 0.45\nalive_weight = 0.25\nmomentum_weight = 0.25\n"
        "bad_experience_weight = 0.15\n",
    )
    with pytest.raises(ValidationError) as caught:
        load_config(path)
    [error] = caught.value.errors()
    assert error["loc"] == ("churn",)
    assert "churn weights add up to 1.09999" in error["msg"]
    assert "must be at most 1" in error["msg"]


def test_momentum_short_not_below_long_is_rejected(tmp_path: Path) -> None:
    for short in (60, 90):
        path = write(tmp_path, f"[momentum]\nshort_half_life_days = {short}\n")
        with pytest.raises(ValidationError) as caught:
            load_config(path)
        [error] = caught.value.errors()
        assert error["loc"] == ("momentum",)
        assert "short_half_life_days" in error["msg"]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[churn.thresholds]\nelevated = 0.8\nhigh = 0.7\n", "high"),
        ("[engagement.weights]\norder = -1\n", "order"),
        ("[engagement]\nsaturaton = 10\n", "saturaton"),
        ('[engagement.features]\nlikes = { subscore = "social" }\n', "engagement.features.likes"),
        ('[engagement.features]\nshares = { subscore = "fun" }\n', "subscore"),
        ('[engagement.event_features]\nspin = "spins"\n', "engagement.event_features.spin"),
        ("[tiers]\nlost_after_days = 10\n", "lost_after_days"),
        ("[clv]\nannual_discount = 1.5\n", "annual_discount"),
        ('[bad_experiences]\napp_crash = "critical"\n', "app_crash"),
        ("[interventions.rules]\nlow_csat_max = 7\n", "low_csat_max"),
        ("[dedup]\nwindow_s = 0\n", "window_s"),
    ],
)
def test_invalid_values_fail_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load_config(write(tmp_path, text))
    assert named in str(caught.value)


def test_malformed_toml_fails(tmp_path: Path) -> None:
    with pytest.raises(tomllib.TOMLDecodeError):
        load_config(write(tmp_path, "[churn\n"))


@pytest.mark.parametrize("name", ["retail", "gaming", "subscription"])
def test_every_shipped_profile_loads_with_features_in_known_subscores(name: str) -> None:
    config = load_profile(name)
    assert config.profile == name
    assert config.engagement.features
    assert sum(config.engagement.subscores.values()) > 0
    # the file says what it is, and naming it in a custom file starts from it
    assert config.engagement.features == parse_config(f'profile = "{name}"').engagement.features


def test_the_profiles_weigh_different_things() -> None:
    retail, gaming = load_profile("retail"), load_profile("gaming")
    assert "playing_days" in gaming.engagement.features
    assert "playing_days" not in retail.engagement.features
    assert gaming.engagement.event_features


def test_an_unknown_profile_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="profile: 'casino'"):
        load_config(write(tmp_path, 'profile = "casino"\n'))
    with pytest.raises(ValueError, match="profile: 'casino'"):
        load_profile("casino")


def test_model_parameters_are_set_by_code_not_toml(tmp_path: Path) -> None:
    params = ModelParams(bgnbd=BgNbdParams(r=0.25, alpha=4.0, a=0.8, b=2.4))
    config = load_config().with_model(params)
    assert config.model == params
    assert load_config().model == ModelParams()
    with pytest.raises(ValidationError):
        load_config(write(tmp_path, "[model]\nr = 1\n"))
