"""docs/CONFIGURATION.md is what scripts/configuration_doc.py writes from the settings model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from streams.settings import Settings

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "configuration_doc.py"
DOC = ROOT / "docs" / "CONFIGURATION.md"


def _script() -> ModuleType:
    # scripts/ is not a package: the generator is imported by its path.
    spec = importlib.util.spec_from_file_location("configuration_doc", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_document_is_what_the_settings_model_renders() -> None:
    rendered = _script().render()
    current = DOC.read_text("utf-8") if DOC.is_file() else ""
    assert current == rendered, (
        "docs/CONFIGURATION.md differs from the settings in streams/settings.py: "
        "run python scripts/configuration_doc.py"
    )


def test_every_setting_has_a_description() -> None:
    missing = [
        name
        for name, field in Settings.model_fields.items()
        if not (field.description and field.description.strip())
    ]
    assert not missing, f"settings without a Field(description=...): {missing}"


def test_every_setting_has_a_row() -> None:
    text = _script().render()
    for name in Settings.model_fields:
        assert f"| `ENGAGEMENT_{name.upper()}` |" in text
