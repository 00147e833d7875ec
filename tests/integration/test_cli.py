"""The command line as a user runs it: simulate into a real broker, score, inspect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from worker_harness import consume_until, running_workers, settings_of, wait_for, worker_env

from streams.dev.services import Endpoints
from streams.dev.simulator import generate, publish, topic_for


def engagement(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def test_simulate_publishes_keyed_events_and_customer_explains_a_score(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    env = worker_env(endpoints, test_token, tmp_path)
    with running_workers(env, 1, tmp_path) as (worker,):
        done = engagement(env, "simulate", "--customers", "12", "--days", "20", "--seed", "4")
        assert done.returncode == 0, done.stderr
        sent = int(done.stdout.split()[1])
        assert sent > 100

        def scored() -> bool:
            return (
                sum(
                    worker.metric("engagement_events_total", outcome=o)
                    for o in ("applied", "duplicate", "deadletter")
                )
                >= sent
            )

        wait_for(scored, 60, "the simulated events scored", worker)
        assert worker.metric("engagement_events_total", outcome="rerouted") == 0  # keyed

        shown = engagement(env, "customer", "c000003", "--json")
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        assert report["customer_id"] == "c000003"
        assert 0 <= report["churn_risk"] <= 1 and 0 <= report["engagement_score"] <= 100
        total = sum(r["contribution"] for r in report["reasons"])
        assert total == pytest.approx(report["churn_risk"], abs=1e-3)
        assert report["counts"]["events"] > 0

        missing = engagement(env, "customer", "nobody")
        assert missing.returncode == 1 and "no state" in missing.stderr


async def test_publish_keys_each_event_by_customer_on_its_topic(
    endpoints: Endpoints, test_token: str, tmp_path: Path
) -> None:
    env = worker_env(endpoints, test_token, tmp_path)
    s = settings_of(env)
    events = generate(5, 10, 2, datetime(2026, 3, 1, tzinfo=UTC))
    progress: list[int] = []
    assert await publish(events, s, rate=5000, on_progress=progress.append) == len(events)
    assert progress and progress[-1] == len(events)
    topics = sorted({topic_for(e, s) for e in events})
    seen = await consume_until(s.kafka_bootstrap, topics, lambda got: len(got) >= len(events))
    assert len(seen) == len(events)
    by_id = {json.loads(r.value)["event_id"]: r for r in seen}
    for e in events:
        record = by_id[str(e.payload["event_id"])]
        assert record.key == e.customer_id.encode() and record.topic == topic_for(e, s)


def test_a_bad_setting_stops_the_worker_naming_the_variable(tmp_path: Path) -> None:
    done = engagement({"ENGAGEMENT_CLOCK": "sundial"}, "worker")
    assert done.returncode == 2
    assert "ENGAGEMENT_CLOCK" in done.stderr
