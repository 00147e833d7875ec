"""benchmarks.ab_worker at the smoke plan's size, against this very tree, so the tool
cannot rot (its figures mean nothing here)."""

from __future__ import annotations

import pytest

from benchmarks import ab_worker, procs


@pytest.mark.timeout(300)
def test_both_workers_score_the_whole_workload_and_the_pair_is_compared() -> None:
    repo = procs.REPO
    out = ab_worker.compare(repo, repeats=1, smoke=True)
    assert out["this"] > 0 and out["other"] > 0
    assert len(out["ratios"]) == 1 and out["ratio"] == out["this"] / out["other"]
    assert procs.REPO is repo  # put back after the other tree's run
