"""The fault schedules, each its own scenario, and one combining them. A schedule runs
while the workload is published; each fault waits for a point of progress first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from driver import Run

Schedule = Callable[[Run], Awaitable[None]]


async def kills(run: Run) -> None:
    """kill -9 of a worker at random moments, repeatedly; the supervisor restarts it."""
    for share in sorted(run.rng.uniform(0.05, 0.85) for _ in range(run.scale.kills)):
        await run.progress_at_least(share)
        await run.kill()


async def rebalance(run: Run) -> None:
    await run.progress_at_least(0.2)
    await run.join("w2")
    await run.progress_at_least(0.6)
    await run.leave("w2")


async def redis_outage(run: Run) -> None:
    await run.progress_at_least(0.3)
    await run.redis_outage(run.scale.redis_down_s)


async def redis_rollback(run: Run) -> None:
    await run.progress_at_least(0.4)
    await run.redis_rollback()


async def broker_restart(run: Run) -> None:
    await run.progress_at_least(0.4)
    await run.broker_restart(5)


async def poison_only(run: Run) -> None:
    """No fault: the malformed messages interleaved in every workload are the only test."""


async def slow_alert_consumers(run: Run) -> None:
    """Downstream consumers of the alert topics that fall behind for the whole run: one
    group handling an alert per 50 ms, one member stalled after its first fetch. Scoring
    shares only the broker with them: compare the report's applied_all_s with the poison
    scenario's, and the slow group's lag when every input was applied."""
    readers = await run.start_alert_readers(pause_s=0.05)
    await run.progress_at_least(1.0)
    await readers.note_applied_all()


async def combined(run: Run) -> None:
    await run.progress_at_least(0.1)
    await run.kill()
    await run.progress_at_least(0.2)
    await run.join("w2")
    await run.progress_at_least(0.3)
    await run.redis_outage(min(10.0, run.scale.redis_down_s))
    await run.progress_at_least(0.4)
    await run.kill()
    await run.progress_at_least(0.45)
    await run.redis_rollback()
    if run.broker.restartable:
        await run.progress_at_least(0.6)
        await run.broker_restart(5)
    await run.progress_at_least(0.7)
    await run.leave("w2")
    await run.progress_at_least(0.8)
    await run.kill()


async def reduced(run: Run) -> None:
    """For `make test`: two kills and one rebalance, on the embedded pair."""
    await run.progress_at_least(0.1)
    await run.kill()
    await run.progress_at_least(0.3)
    await run.kill()
    await run.progress_at_least(0.45)
    await run.join("w2")
    await run.progress_at_least(0.7)
    await run.leave("w2")


FULL: dict[str, Schedule] = {
    "kill-9": kills,
    "rebalance": rebalance,
    "redis-outage": redis_outage,
    "redis-aof-loss": redis_rollback,
    "broker-restart": broker_restart,
    "poison": poison_only,
    "slow-alert-consumers": slow_alert_consumers,
    "combined": combined,
}
REDUCED: dict[str, Schedule] = {"reduced": reduced}
