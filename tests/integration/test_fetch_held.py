"""The held-fetch experiment of the benchmarks (benchmarks/experiments.py, ``held``), at a
tiny size: each record is produced into the wait of the fetch that brings it, and that
fetch is answered after it."""

from __future__ import annotations

import pytest

from benchmarks.experiments import _held_fetch
from streams.services import Endpoints


@pytest.mark.timeout(60)
async def test_each_record_goes_into_the_wait_of_the_fetch_that_brings_it(
    endpoints: Endpoints,
) -> None:
    results = await _held_fetch(endpoints.kafka_bootstrap, waits=(40,), rounds=2)

    assert list(results) == [
        "fetch_max_wait_ms=40, produced at 20% of the wait",
        "fetch_max_wait_ms=40, produced at 60% of the wait",
    ]
    for name, case in results.items():
        assert 0 < case["produced_ms"] < case["answered_ms"], name
