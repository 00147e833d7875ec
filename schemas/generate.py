"""Write the JSON Schema of every message model to ``schemas/json/`` (checked in).

Run ``python -m schemas.generate`` after changing a model; a unit test fails while the
checked-in files differ from what the models generate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.alerts import ChurnRiskAlert, InterventionAlert
from schemas.events import ClickstreamEvent, FeedbackEvent, PurchaseEvent

JSON_DIR = Path(__file__).resolve().parent / "json"

MODELS: dict[str, type[BaseModel]] = {
    "clickstream-event.json": ClickstreamEvent,
    "purchase-event.json": PurchaseEvent,
    "feedback-event.json": FeedbackEvent,
    "churn-risk-alert.json": ChurnRiskAlert,
    "intervention-alert.json": InterventionAlert,
}


def schema_files() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema of its model (no ``$id``: the output depends on nothing else)."""
    return {name: model.model_json_schema() for name, model in MODELS.items()}


def render(schema: dict[str, Any]) -> str:
    """The exact text of a schema file."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    files = schema_files()
    for stale in sorted(JSON_DIR.glob("*.json")):
        if stale.name not in files:
            stale.unlink()
            print(f"removed {stale}")
    for name, schema in files.items():
        path = JSON_DIR / name
        text = render(schema)
        if not path.exists() or path.read_text("utf-8") != text:
            path.write_text(text, "utf-8")
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
