"""Faults injected into running workers; afterwards every invariant must hold.

Each scenario's report (faults, recoveries, what was lost or doubled) is also written as
JSON to ``$CHAOS_REPORT_DIR`` (default .engagement/chaos/) for RELIABILITY.md.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import orjson
import pytest
from driver import Report, Run, Scale
from scenarios import FULL, REDUCED
from services import Broker, RedisServer
from workload import Truth, Workload

from scoring.config import ScoringConfig

REPORT_DIR = Path(os.environ.get("CHAOS_REPORT_DIR", ".engagement/chaos"))
SCENARIOS = FULL if os.environ.get("CHAOS_SCALE") == "full" else REDUCED


def _save(scale: Scale, report: Report) -> None:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    body = dataclasses.asdict(report)
    path = REPORT_DIR / f"{scale.name}-{report.scenario}.json"
    path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_invariants_hold_after_faults(
    scenario: str,
    scale: Scale,
    redis_server: RedisServer,
    broker: Broker,
    workload: Workload,
    truth: Truth,
    config: ScoringConfig,
    tmp_path: Path,
) -> None:
    assert truth.alerts and workload.poison, "the workload must alert and hold poison"
    run = Run(scale, redis_server, broker, workload, truth, config, tmp_path, scenario)
    report = await run.run(SCENARIOS[scenario])
    _save(scale, report)
    failures = report.findings.failures()
    logs = "\n".join(str(p) for p in sorted(tmp_path.glob("*.log")))
    assert not failures, f"{scenario}: {failures}\nfaults: {report.faults}\nworker logs:\n{logs}"
    assert len(report.faults) >= (scale.kills if scenario == "kill-9" else 0)
    # Every alert arrived, from states built of every event exactly once.
    assert report.findings.alerts_received >= report.findings.alerts_expected > 0
    assert report.findings.customers == len(truth.states)
    if (readers := report.alert_readers) is not None:
        # The slow and the stalled reader really read alerts while the workers scored.
        assert not readers.errors and readers.slow_read > 0 and readers.stalled_read > 0, readers
