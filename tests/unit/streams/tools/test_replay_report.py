"""The replay's comparison of old and new alert counts, its table and JSON, its progress
line, and the (kind, level) read from a published alert."""

from __future__ import annotations

import io
from collections import Counter

from streams.tools.replay_report import (
    Comparison,
    ProgressLine,
    ReplayResult,
    alert_kind,
    compare,
    comparison_json,
    format_table,
)


def test_compare_lists_every_kind_seen_once_churn_first_levels_in_rising_order() -> None:
    old = Counter({("product_return", "low"): 3, ("churn_risk", "high"): 2})
    new = Counter(
        {("churn_risk", "elevated"): 5, ("churn_risk", "high"): 1, ("bad_experience", "high"): 4,
         ("bad_experience", "low"): 2}
    )  # fmt: skip
    rows = compare(old, new)
    assert rows == [
        Comparison("churn_risk", "elevated", 0, 5),
        Comparison("churn_risk", "high", 2, 1),
        Comparison("bad_experience", "low", 0, 2),
        Comparison("bad_experience", "high", 0, 4),
        Comparison("product_return", "low", 3, 0),
    ]
    assert [r.difference for r in rows] == [5, -1, 2, 4, -3]


def test_the_table_aligns_columns_signs_differences_and_ends_with_totals() -> None:
    table = format_table(
        [Comparison("churn_risk", "elevated", 10, 12), Comparison("low_csat", "medium", 7, 7)]
    )
    lines = table.splitlines()
    assert lines[0].split() == ["alert", "old", "new", "difference"]
    assert lines[1].split() == ["churn_risk/elevated", "10", "12", "+2"]
    assert lines[2].split() == ["low_csat/medium", "7", "7", "+0"]
    assert lines[3].split() == ["total", "17", "19", "+2"]
    # Right-aligned numbers: every line's last column ends at the same place.
    assert len({len(line) for line in lines}) == 1


def test_an_empty_comparison_still_prints_a_zero_total() -> None:
    assert format_table([]).splitlines()[-1].split() == ["total", "0", "0", "+0"]


def test_the_json_report_carries_rows_totals_and_event_counts() -> None:
    result = ReplayResult("ns2", emitted=False, events=9, applied=7, dead_letters=2)
    result.old = Counter({("churn_risk", "high"): 4})
    result.new = Counter({("churn_risk", "high"): 1, ("low_csat", "medium"): 2})
    report = comparison_json(result)
    assert report["alerts"] == [
        {"kind": "churn_risk", "level": "high", "old": 4, "new": 1, "difference": -3},
        {"kind": "low_csat", "level": "medium", "old": 0, "new": 2, "difference": 2},
    ]
    assert report["total"] == {"old": 4, "new": 3, "difference": -1}
    assert report["events"]["read"] == 9 and report["events"]["dead_letters"] == 2
    assert report["namespace"] == "ns2" and report["emitted"] is False


def test_alert_kind_reads_a_churn_level_or_an_intervention_severity() -> None:
    churn = b'{"alert_id":"a1","kind":"churn_risk","level":"high","churn_risk":0.8}'
    intervention = b'{"alert_id":"a2","kind":"low_csat","severity":"medium"}'
    assert alert_kind(churn) == ("a1", ("churn_risk", "high"))
    assert alert_kind(intervention) == ("a2", ("low_csat", "medium"))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_line_shows_read_over_total_and_rate() -> None:
    line = ProgressLine(200, io.StringIO()).line(50, elapsed=2.0)
    assert line == "replay 50/200 events (25%), 25 events/s"


def test_on_a_terminal_progress_rewrites_one_line_and_ends_it() -> None:
    out = Terminal()
    bar = ProgressLine(10, out, interval_s=0.0)
    bar.update(4)
    bar.update(10, final=True)
    text = out.getvalue()
    assert text.startswith("\rreplay 4/10 events (40%)")
    assert "\rreplay 10/10 events (100%)" in text and text.endswith("\n")
    assert text.count("\n") == 1


def test_off_a_terminal_only_the_final_line_is_written() -> None:
    out = io.StringIO()
    bar = ProgressLine(10, out, interval_s=0.0)
    bar.update(4)
    bar.update(10, final=True)
    assert out.getvalue().startswith("replay 10/10 events (100%)")
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
