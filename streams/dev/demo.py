"""`make demo`: a worker scoring a few hundred simulated customers, alerts printed live.

The simulated history spans ``days`` of event time and is replayed on the event clock in
about a minute, so customers who fade away go silent for weeks of event time and the
sweeper has to notice it without any event of theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from streams.dev.services import Endpoints, embedded_services
from streams.dev.simulator import generate, publish
from streams.dev.workers import WorkerProcess
from streams.settings import Settings, load_settings

STATE_DIR = Path(".engagement") / "demo"


@contextlib.contextmanager
def _services() -> Iterator[Endpoints]:
    bootstrap = os.environ.get("ENGAGEMENT_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("ENGAGEMENT_REDIS_URL")
    if bootstrap and redis_url:
        print(f"using Kafka at {bootstrap} and the Redis in ENGAGEMENT_REDIS_URL")
        yield Endpoints(bootstrap, redis_url)
        return
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    print("starting the embedded broker (Tansu) and Redis (Valkey)...")
    with embedded_services(STATE_DIR) as endpoints:
        yield endpoints


def run_demo(customers: int, days: float, seed: int, seconds: float) -> int:
    with _services() as endpoints:
        run = datetime.now(tz=UTC).strftime("%Y%m%d%H%M%S")
        env = {
            **os.environ,
            "ENGAGEMENT_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
            "ENGAGEMENT_REDIS_URL": endpoints.redis_url,
            "ENGAGEMENT_CLOCK": "event",
            "ENGAGEMENT_NAMESPACE": f"demo{run}",
            "ENGAGEMENT_APP_ID": f"engagement-demo-{run}",
            "ENGAGEMENT_STATE_DIR": str(STATE_DIR / "worker"),
            "ENGAGEMENT_SESSION_TIMEOUT_S": "6",
        }
        worker = WorkerProcess.start(env, STATE_DIR / "worker.log", loglevel="warn")
        os.environ.update({**env, "ENGAGEMENT_WEB_PORT": str(worker.port)})
        settings = load_settings()
        try:
            return asyncio.run(_drive(settings, customers, days, seed, seconds, worker))
        except KeyboardInterrupt:
            return 130
        finally:
            worker.stop(timeout=15)


async def _drive(
    settings: Settings,
    customers: int,
    days: float,
    seed: int,
    seconds: float,
    worker: WorkerProcess,
) -> int:
    deadline = time.monotonic() + seconds
    print("waiting for the worker to join its group...")
    await _poll(lambda: bool(worker.owned_shards()), time.monotonic() + 60, worker)

    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(days=days)
    events = generate(customers, days, seed, start)
    alerts: Counter[str] = Counter()
    watcher = asyncio.create_task(_print_alerts(settings, alerts))
    rate = len(events) / max(1.0, seconds * 0.6)
    print(
        f"publishing {len(events)} events for {customers} customers over {days:.0f} days "
        f"of event time at {rate:.0f} events/s"
    )
    sent = await publish(events, settings, rate=rate)

    def scored() -> bool:
        outcomes = ("applied", "duplicate", "deadletter")
        return sum(worker.metric("engagement_events_total", outcome=o) for o in outcomes) >= sent

    await _poll(scored, deadline + 30, worker)
    # Give the sweeper the rest of the minute to notice the customers who went silent.
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    print("\nsummary")
    print(f"  events published: {sent}")
    print(f"  customers:        {customers}")
    for kind, n in sorted(alerts.items()):
        print(f"  alerts {kind:<28} {n}")
    print(f"  alerts total:     {sum(alerts.values())}")
    return 0 if worker.alive() else 1


async def _print_alerts(settings: Settings, alerts: Counter[str]) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic_churn_risk,
        settings.topic_interventions,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"{settings.app_id}-demo-printer",
    )
    await consumer.start()
    try:
        async for message in consumer:
            alert = orjson.loads(message.value or b"{}")
            print(_describe(alert))
            label = alert["kind"] + (f" ({alert['level']})" if "level" in alert else "")
            alerts[label] += 1
    finally:
        await consumer.stop()


def _describe(alert: dict[str, object]) -> str:
    """One line per alert, its reasons next to it: every factor with its signed share of
    the score (they add up to it)."""
    reasons = alert.get("reasons") or []
    assert isinstance(reasons, list)
    if alert["kind"] == "churn_risk":
        trigger = alert["trigger"]
        assert isinstance(trigger, dict)
        why = ", ".join(f"{r['factor']} {r['contribution']:+.2f}" for r in reasons)
        extra = "".join(
            f" {name} {alert[name]}"
            if not isinstance(alert[name], float)
            else f" {name} {alert[name]:.2f}"
            for name in ("tier", "p_alive")
            if alert.get(name) is not None
        )
        return (
            f"[churn_risk {alert['level']:>8}] {alert['customer_id']} "
            f"risk {alert['churn_risk']:.2f} (was {alert['previous_churn_risk']:.2f}) "
            f"on {trigger['source']} at {str(alert['occurred_at'])[:16]}: {why}{extra}"
        )
    why = "; ".join(r["detail"] for r in reasons)
    customer = alert.get("customer")
    tier = customer.get("tier") if isinstance(customer, dict) else None
    return (
        f"[intervention {alert['kind']}/{alert['severity']}] {alert['customer_id']} -> "
        f"{alert['recommended_action']}: {why}" + (f" (tier {tier})" if tier else "")
    )


async def _poll(condition: Callable[[], bool], deadline: float, worker: WorkerProcess) -> None:
    while not condition():
        if not worker.alive():
            raise SystemExit(f"the worker exited; see {STATE_DIR / 'worker.log'}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out; see {STATE_DIR / 'worker.log'}")
        await asyncio.sleep(0.5)
