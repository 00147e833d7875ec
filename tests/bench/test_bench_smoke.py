"""The benchmark harness in smoke mode: every section runs and reports positive figures.

The targets (events/s, latency, bytes per customer) are not asserted: this is not a timed
test. The harness starts its own embedded broker and Redis, so it runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
THROUGHPUT = (
    "full_scorer",
    "faust_noack_take_ack",
    "faust_take",
    "aiokafka_getmany",
    "naive_scorer_per_event",
    "naive_get_set_per_event",
    "scorer_without_faust",
    "two_workers",
)


def _positive(node: dict[str, Any], *keys: str) -> None:
    for key in keys:
        assert key in node, f"missing {key}"
        assert node[key]["median"] > 0 and node[key]["min"] > 0, f"{key}: {node[key]}"


@pytest.mark.timeout(300)
@pytest.mark.skipif(
    bool(os.environ.get("ENGAGEMENT_TEST_KAFKA_BOOTSTRAP")),
    reason="the harness measures the embedded pair (Tansu + Valkey); it ran in the embedded suite",
)
def test_smoke_run_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    command = [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"

    results = json.loads(out.read_text())
    assert results["errors"] == []
    assert results["complete"] is True
    meta = results["meta"]
    assert meta["nproc"] > 0 and meta["memory_gib"] > 0
    for key in ("date", "git_commit", "python", "command"):
        assert meta[key]
    assert "--smoke" in meta["command"]
    assert results["plan"]["repeats"] == 1
    assert results["workload"]["events"] > 0

    for variant in THROUGHPUT:
        _positive(results["throughput"][variant], "events_per_s")
    for ratio in ("full_vs_faust_noack_take_ack", "full_vs_naive_scorer_per_event",
                  "two_workers_vs_one"):  # fmt: skip
        _positive(results["ratios"], ratio)

    for variant in ("default", "default_one_in_ten_alerts"):
        latency = results["latency"][variant]
        assert latency, f"no latency phase of {variant}"
        for phase in latency.values():
            _positive(phase, "achieved_rate", "p95_ms", "p99_ms", "max_ms", "alerts")
            assert phase["missing"]["max"] == 0, f"{variant}: alerts missing"
            # which clock stamped both ends (LogAppendTime where the broker takes it)
            assert phase["both_ends_broker_appends"]["median"] in (0, 1)

    memory = results["redis_memory"]
    assert memory, "no memory size"
    for size in memory.values():
        _positive(size, "bytes_per_customer", "memory_usage_customer_key_mean",
                  "due_zset_bytes_per_member", "meta_hash_bytes_total")  # fmt: skip

    _positive(results["sweep"], "customers_per_s", "customers_swept")
    # two processes, half the shards each: between them every due customer, none left
    two = results["sweep_two_workers"]
    _positive(two, "customers_per_s", "customers_swept", "vs_one")
    assert two["customers_swept"]["min"] == results["sweep"]["customers_swept"]["max"]
    assert two["still_due"]["max"] == 0

    assert {t["target"] for t in results["targets"]} and all(
        isinstance(t["met"], bool) for t in results["targets"]
    )
    table = out.with_suffix(".md").read_text()
    for heading in ("Throughput", "Latency", "Redis memory", "Sweep", "Targets"):
        assert f"## {heading}" in table
