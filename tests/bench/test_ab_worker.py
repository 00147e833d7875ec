"""benchmarks.ab_worker at the smoke plan's size, against this very tree, so the tool
cannot rot (its figures mean nothing here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import ab_worker, procs


@pytest.mark.timeout(300)
def test_both_workers_score_the_whole_workload_and_the_pair_is_compared() -> None:
    out = ab_worker.compare(procs.REPO, repeats=1, smoke=True)
    assert out["this"] > 0 and out["other"] > 0
    assert len(out["ratios"]) == 1 and out["ratio"] == out["this"] / out["other"]


def test_processes_start_in_the_other_checkout_only_while_asked(tmp_path: Path) -> None:
    with procs.Procs(tmp_path) as running:
        with running.started_in(tmp_path):
            inside = running._spawn("pwd", ["pwd"], {}, None)
        after = running._spawn("pwd", ["pwd"], {}, None)
        for p in (inside, after):
            p.process.wait(10)
    assert inside.log.read_text().strip() == str(tmp_path)
    assert after.log.read_text().strip() == str(procs.REPO)
