"""The checked-in JSON Schema files are exactly what the models generate."""

from __future__ import annotations

import json

import pytest

from schemas.generate import JSON_DIR, render, schema_files

REGENERATE = "run `python -m schemas.generate` and commit schemas/json/"


def test_the_schema_directory_holds_exactly_the_generated_files() -> None:
    on_disk = {p.name for p in JSON_DIR.glob("*.json")}
    expected = set(schema_files())
    assert on_disk == expected, (
        f"missing: {sorted(expected - on_disk)}, extra: {sorted(on_disk - expected)}; {REGENERATE}"
    )


@pytest.mark.parametrize("name", sorted(schema_files()))
def test_checked_in_schema_matches_the_model(name: str) -> None:
    path = JSON_DIR / name
    assert path.exists(), f"{path} is missing; {REGENERATE}"
    fresh = schema_files()[name]
    assert json.loads(path.read_text("utf-8")) == fresh, f"{path} is stale; {REGENERATE}"
    assert path.read_text("utf-8") == render(fresh), f"{path} is not formatted; {REGENERATE}"


@pytest.mark.parametrize("name", sorted(schema_files()))
def test_generated_schema_is_stable_and_has_no_id(name: str) -> None:
    first, second = schema_files()[name], schema_files()[name]
    assert render(first) == render(second)
    assert "$id" not in render(first)
    assert first["type"] == "object"
    assert first["title"]
