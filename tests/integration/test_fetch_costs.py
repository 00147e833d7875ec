"""The fetch-cost experiment of the benchmarks (benchmarks/fetches.py), at a tiny size:
every event reaches the consumer in every case, and its fetches are counted."""

from __future__ import annotations

import pytest

from benchmarks.fetches import CASES, fetch_costs
from streams.services import Endpoints


@pytest.mark.timeout(120)
async def test_every_case_reads_every_event_and_counts_its_fetches(endpoints: Endpoints) -> None:
    results = await fetch_costs(endpoints.kafka_bootstrap, repeats=1, rate=200, seconds=0.5)

    assert list(results) == [f"{name}, {how}" for how in ("200 events/s", "idle")
                             for name, *_ in CASES]  # fmt: skip
    for (name, n_topics, wait, min_bytes, policy), (case,) in zip(
        CASES * 2, results.values(), strict=True
    ):
        events = 100 if case is results[f"{name}, 200 events/s"][0] else 0
        assert case["records"] == case["events_sent"] == events, name
        assert case["partitions_assigned"] == 8 * n_topics
        assert (case["fetch_max_wait_ms"], case["fetch_min_bytes"]) == (wait, min_bytes)
        assert case["fetch_sessions"] is (policy is not None and policy.sessions)
        assert case["fetch_gather_ms"] == (policy.gather_ms if policy else 0)
        assert case["fetches_per_s"] > 0 and case["consumer_cpu_us_per_fetch"] > 0, name
