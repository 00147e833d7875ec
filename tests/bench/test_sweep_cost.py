"""benchmarks.sweep_cost at a tiny size, so the tool cannot rot (its figures mean nothing
here)."""

from __future__ import annotations

from benchmarks import sweep_cost


def test_the_sweep_cost_harness_sweeps_every_due_customer() -> None:
    costs = sweep_cost.run(customers=300, repeats=1, template_customers=100)
    cost = costs[0]
    assert cost.customers == 300
    assert cost.still_due == 0
    assert cost.customers_per_s > 0 and cost.worker_cpu_us > 0
    # The sweep's read (MGET) and commit (the script) reached Valkey.
    assert cost.redis_commands_us["mget"] > 0 and cost.redis_commands_us["evalsha"] > 0
    text = sweep_cost.report(costs)
    assert "300 due customers" in text and "evalsha" in text


def test_the_parts_cover_every_due_customer() -> None:
    timed = {name: (count, us) for name, count, us in sweep_cost.parts(300, 1, 100)}
    settle_only = timed["settle-only: sweep_shard"][0]
    evaluated = timed["evaluated: sweep_shard"][0]
    assert settle_only + evaluated == 300 and settle_only > 0 and evaluated > 0
    alerting = timed["evaluated: sweep_due, alerting"][0]
    assert alerting + timed["evaluated: sweep_due, no alert"][0] == evaluated
    assert timed["alerting: engagement_score"][0] == alerting
    assert all(us > 0 for count, us in timed.values() if count)
