"""docs/SCORING.md carries what the code computes: its generated blocks are checked here."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from scoring.example import AS_OF, example_state, weights_table, worked_example
from scoring.state import DAY_S

DOC = Path(__file__).parents[3] / "docs" / "SCORING.md"


def block(name: str) -> str:
    text = DOC.read_text("utf-8")
    found = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert found, f"docs/SCORING.md has no {name} block"
    return found.group(1)


def test_the_weights_table_is_the_retail_profiles() -> None:
    assert block("retail-weights") == weights_table(), "run python -m scoring.example"


def test_the_worked_example_is_what_the_code_computes() -> None:
    assert block("worked-example") == worked_example(), "run python -m scoring.example"


def test_the_worked_example_follows_the_documented_formulas() -> None:
    state, config = example_state()
    at = AS_OF.timestamp()
    shown = block("worked-example")
    silent_days = (at - state.last_seen) / DAY_S
    c = config.churn
    recency = c.recency_weight * (1 - 2 ** (-silent_days / c.recency_half_life_days))
    assert f"| recency | no activity for {silent_days:.1f} days | {recency:+.4f} |" in shown
    # loyalty: mean NPS 9 / 10, one repeat purchase day, three products bought
    lc = config.loyalty
    parts = (
        0.9,
        1 - math.exp(-1 / lc.repurchase_saturation),
        1 - math.exp(-2 / lc.upsell_saturation),
    )
    assert f"**loyalty = {100 * sum(parts) / 3:.4f}**" in shown
    total = sum(
        float(m.group(1))
        for m in re.finditer(r"\| ([+-][0-9.]+) \|$", shown.split("**momentum")[0], re.M)
    )
    found = re.search(r"engagement_score = ([0-9.]+)", shown)
    assert found
    score = float(found.group(1))
    assert total == pytest.approx(score, abs=1e-3)
