from __future__ import annotations

import pytest

from streams.settings import SettingsError, load_settings


def test_defaults_load_and_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGAGEMENT_CLOCK", raising=False)
    settings = load_settings()
    assert settings.clock == "wall"
    assert settings.input_topics == (
        "engagement.clickstream",
        "engagement.purchases",
        "engagement.feedback",
    )
    with pytest.raises(ValueError, match="frozen"):
        settings.partitions = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENGAGEMENT_CLOCK", "sundial"),
        ("ENGAGEMENT_KAFKA_BOOTSTRAP", "localhost"),
        ("ENGAGEMENT_PARTITIONS", "0"),
        ("ENGAGEMENT_NAMESPACE", "has{braces}"),
        ("ENGAGEMENT_SCORING_CONFIG", "/no/such/file.toml"),
        ("ENGAGEMENT_BATCH_WITHIN_S", "soon"),
        ("ENGAGEMENT_EVENT_LOOP", "trio"),
        ("ENGAGEMENT_FETCH_MIN_BYTES", "0"),
        ("ENGAGEMENT_FETCH_GATHER_MS", "-1"),
        ("ENGAGEMENT_FETCH_SESSIONS", "sometimes"),
    ],
)
def test_a_bad_variable_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert variable in str(raised.value)


def test_the_redis_url_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGEMENT_REDIS_URL", "redis://:hunter2@db:6379/0")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert settings.redis_url.get_secret_value().endswith("@db:6379/0")
