"""The latency section: event append -> alert append, at fixed input rates, measured by a
consumer of the alert topics."""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from benchmarks.procs import Proc, cpu_seconds, machine_busy_seconds
from benchmarks.sections import POLL_S, Context, percentile, settings_of
from streams.kafka.topics import ensure_topics
from streams.settings import Settings

if TYPE_CHECKING:
    from benchmarks.profile import Spy


class AlertCollector:
    """Reads an alert topic from the start; remembers each alert by trigger_event_id with
    its record timestamp and when it was received."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.seen: dict[str, tuple[int, int, float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=50)
            received = time.time() * 1000
            for records in batches.values():
                for r in records:
                    alert = orjson.loads(r.value)
                    trigger = alert.get("trigger_event_id")
                    if trigger:
                        self.seen[trigger] = (r.timestamp, r.timestamp_type, received)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


_HIST = re.compile(r"^(engagement_batch_(?:seconds|events))_(sum|count) ([0-9.e+-]+)$")


def batch_totals(worker: Proc | None) -> dict[str, float]:
    """Sums and counts of the worker's batch histograms (seconds per batch, events)."""
    body = worker.get("/metrics") if worker is not None else None
    found: dict[str, float] = {}
    for line in (body or "").splitlines():
        m = _HIST.match(line)
        if m:
            found[f"{m.group(1)}_{m.group(2)}"] = float(m.group(3))
    return found


async def _latency_phase(
    producer: AIOKafkaProducer,
    collector: AlertCollector,
    topics: tuple[str, str],
    rate: int,
    count: int,
    tag: str,
    worker: Proc | None = None,
    alert_every: int = 1,
) -> dict[str, Any]:
    """Every ``alert_every``-th event a detractor answer of a new customer (an alert);
    the others page views of returning customers (scored, no alert). ``topics``: the
    feedback and clickstream topics."""
    topic, clicks = topics
    loop = asyncio.get_running_loop()
    batches_before = batch_totals(worker)
    # The worker's CPU and the whole machine's over the phase: at these rates the cores are
    # shared by the worker, the broker, Redis, the load and the alert reader.
    worker_cpu_before = _cpu_of(worker)
    machine_before = machine_busy_seconds()
    futures: dict[str, asyncio.Future[Any]] = {}
    started, started_wall = loop.time(), time.time()
    i = 0
    while i < count:
        due = min(count, int((loop.time() - started) * rate) + 1)
        while i < due:
            event_id = f"{tag}-e{i}"
            alerting = i % alert_every == 0
            # a detractor answer of a new customer, or a returning customer's page view
            customer = f"{tag}-c{i}" if alerting else f"{tag}-v{i % _RETURNING}"
            kind: dict[str, object] = (
                {"type": "nps", "score": 1}
                if alerting
                else {"type": "page_view", "page": f"/p/{i % 50}"}
            )
            value = orjson.dumps(
                {
                    "event_id": event_id,
                    "customer_id": customer,
                    "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    **kind,
                }
            )
            sent = await producer.send(topic if alerting else clicks, value, key=customer.encode())
            if alerting:
                futures[event_id] = sent
            i += 1
        await asyncio.sleep(0.001)
    send_s = loop.time() - started
    metadata = {event_id: await f for event_id, f in futures.items()}
    stamps = {event_id: m.timestamp for event_id, m in metadata.items()}
    event_kinds = {m.timestamp_type for m in metadata.values()}
    deadline = loop.time() + 60 + count / rate
    while any(e not in collector.seen for e in stamps) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    appended = [collector.seen[e][0] - t for e, t in stamps.items() if e in collector.seen]
    received = [collector.seen[e][2] - t for e, t in stamps.items() if e in collector.seen]
    kinds = {collector.seen[e][1] for e in stamps if e in collector.seen}
    if not appended:
        raise RuntimeError(f"no alert arrived for the {rate}/s phase")
    last = max(collector.seen[e][2] for e in stamps if e in collector.seen) / 1000
    phase_s = max(1e-9, loop.time() - started)
    worker_cpu = _cpu_of(worker) - worker_cpu_before
    machine_cores = (machine_busy_seconds() - machine_before) / phase_s
    batches = {k: v - batches_before.get(k, 0.0) for k, v in batch_totals(worker).items()}
    n_batches = batches.get("engagement_batch_seconds_count", 0.0)
    drain_s = last - started_wall - send_s
    return {
        "target_rate": rate,
        "events": count,
        "achieved_rate": round(count / send_s, 1),
        "alerts": len(appended),
        "missing": len(stamps) - len(appended),
        "p50_ms": percentile(appended, 50),
        "p95_ms": percentile(appended, 95),
        "p99_ms": percentile(appended, 99),
        "max_ms": max(appended),
        "mean_ms": round(statistics.fmean(appended), 1),
        "received_p50_ms": round(percentile(received, 50), 1),
        "received_p99_ms": round(percentile(received, 99), 1),
        # LogAppendTime: the broker's append (stamp_appends); CreateTime: the producer's send
        "event_timestamp_type": "LogAppendTime" if event_kinds == {1} else "CreateTime",
        "alert_timestamp_type": "LogAppendTime" if kinds == {1} else "CreateTime",
        "both_ends_broker_appends": int(event_kinds == kinds == {1}),
        "last_alert_after_last_event_s": round(drain_s, 3),
        # What the worker got through: all events over the time until the last alert.
        "sustained_rate": round(len(appended) / (send_s + max(0.0, drain_s)), 1),
        # From the worker's histograms: batches (scoring + publishing + acks) in the phase.
        "batches": int(n_batches),
        "batch_mean_events": round(
            batches.get("engagement_batch_events_sum", 0.0) / max(1.0, n_batches), 1
        ),
        "batch_mean_ms": round(
            1000 * batches.get("engagement_batch_seconds_sum", 0.0) / max(1.0, n_batches), 2
        ),
        "worker_busy_share": round(batches.get("engagement_batch_seconds_sum", 0.0) / send_s, 3),
        # CPU per event and cores busy, from the phase's start until its alerts were read.
        "worker_cpu_us_per_event": round(1e6 * worker_cpu / count, 1),
        "worker_cpu_cores": round(worker_cpu / phase_s, 3),
        "machine_busy_cores": round(machine_cores, 3),
    }


def _cpu_of(worker: Proc | None) -> float:
    return (cpu_seconds(worker.process.pid) or 0.0) if worker is not None else 0.0


_GATHER_10MS = {"ENGAGEMENT_FETCH_MIN_BYTES": "1000000", "ENGAGEMENT_FETCH_MAX_WAIT_MS": "10"}
_NO_GATHERING = {"ENGAGEMENT_FETCH_GATHER_MS": "0"}
_AIOKAFKA_FETCHING = {**_NO_GATHERING, "ENGAGEMENT_FETCH_SESSIONS": "false"}

# name -> (extra environment, one event in how many alerts): the scorer as shipped, with
# its settings changed where named.
LATENCY_VARIANTS: dict[str, tuple[dict[str, str], int]] = {
    "default": ({}, 1),
    "default_one_in_ten_alerts": ({}, 10),
    "within_50ms": ({"ENGAGEMENT_BATCH_WITHIN_S": "0.05"}, 1),
    "fetch_wait_10ms": ({"ENGAGEMENT_FETCH_MAX_WAIT_MS": "10"}, 1),
    "fetch_wait_10ms_one_in_ten_alerts": (
        {"ENGAGEMENT_FETCH_MAX_WAIT_MS": "10"},
        10,
    ),
    # Fetches gather for 10 ms (a minimum no fetch reaches at these rates): fewer, larger
    # fetches, less CPU per event, up to 10 ms more per event.
    "gather_10ms": (_GATHER_10MS, 1),
    "gather_10ms_one_in_ten_alerts": (_GATHER_10MS, 10),
    # Fetches answered at their first record, even while records keep coming.
    "without_fetch_gathering": (_NO_GATHERING, 1),
    # As aiokafka fetches: every fetch names every partition, and none gathers
    # (streams/kafka/fetching.py).
    "aiokafka_fetching": (_AIOKAFKA_FETCHING, 1),
    "aiokafka_fetching_one_in_ten_alerts": (_AIOKAFKA_FETCHING, 10),
    # Tansu (the embedded broker) looks for records at a fetch's start and halfway:
    # shorter gathering, or fetches answered at the first record within 20 ms.
    "gather_5ms": ({"ENGAGEMENT_FETCH_GATHER_MS": "5"}, 1),
    "first_record_20ms": (
        {**_NO_GATHERING, "ENGAGEMENT_FETCH_MAX_WAIT_MS": "20"},
        1,
    ),
}
# Returning customers of the page views between alerts.
_RETURNING = 5_000


async def stamp_appends(bootstrap: str, topics: list[str]) -> None:
    """Have the broker stamp each record of ``topics`` with its append time
    (message.timestamp.type=LogAppendTime), so that both ends of a latency are appends, not
    the producers' clocks at send. A broker that refuses (Tansu) leaves the records their
    CreateTime; each phase reports which kind it measured."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, t, configs={"message.timestamp.type": "LogAppendTime"}
                )
                for t in topics
            ]
        )
    except Exception as exc:  # measured with CreateTime then, and reported
        print(f"latency: the broker keeps CreateTime ({exc!r})", file=sys.stderr)
    finally:
        await admin.close()


def latency(ctx: Context, rep: int) -> dict[str, dict[str, dict[str, Any]]]:
    """A worker on the wall clock; a producer sends detractor NPS answers (each one an
    intervention alert) of distinct customers at fixed rates (in the one_in_ten variants,
    with nine page views between them), a consumer of the interventions topic matches the
    alerts by trigger_event_id. Once per variant."""
    out = {}
    for variant in ctx.plan.latency_variants:
        extra, alert_every = LATENCY_VARIANTS[variant]
        name = f"{ctx.token}l{rep}{variant.replace('_', '')}"
        env = ctx.env(name, name, name, ENGAGEMENT_CLOCK="wall", **extra)
        settings = settings_of(env)
        asyncio.run(ensure_topics(settings))
        inputs_and_alerts = [
            settings.topic_feedback,
            settings.topic_clickstream,
            settings.topic_interventions,
        ]
        asyncio.run(stamp_appends(settings.kafka_bootstrap, inputs_and_alerts))
        worker = ctx.procs.worker(name, env)
        try:
            deadline = time.monotonic() + 90
            while not worker.owned_shards():
                worker.check("starting")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"latency worker owns no shard after 90s\n{worker.tail()}")
                time.sleep(POLL_S)
            out[variant] = asyncio.run(
                latency_phases(ctx, settings, name, worker, alert_every, f"{variant}-r{rep}")
            )
        finally:
            ctx.procs.stop([worker])
    return out


async def latency_phases(
    ctx: Context,
    settings: Settings,
    tag: str,
    worker: Proc | None = None,
    alert_every: int = 1,
    profile_as: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The warm-up, then one phase per rate of the plan; when the plan names a
    ``latency_profile`` directory, py-spy records the worker over each phase, as
    ``<profile_as>-<rate>.txt``."""
    collector = AlertCollector(
        settings.kafka_bootstrap, settings.topic_interventions, settings.partitions
    )
    # The events' producer lingers 5 ms, as Kafka 4's producers do by default (KIP-1030): a
    # web app's events reach the broker in small batches, not one request each. On Apache
    # Kafka (LogAppendTime) the linger comes before the append and is not in the figure; on
    # Tansu (CreateTime, stamped at send) it is. It saves the broker and this harness, on
    # the worker's two cores, most of the one-record produce requests (BENCHMARKS.md
    # measured the tail with and without it).
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await collector.start()
    await producer.start()
    try:
        topics = (settings.topic_feedback, settings.topic_clickstream)
        warmup = ctx.plan.latency_warmup
        await _latency_phase(producer, collector, topics, 200, warmup, f"{tag}-warm")
        out = {}
        for rate, seconds in ctx.plan.latency:
            count = int(rate * seconds)
            spy = _spy(ctx, worker, profile_as, rate)
            try:
                phase = await _latency_phase(
                    producer, collector, topics, rate, count, f"{tag}-{rate}", worker, alert_every
                )
            finally:
                if spy is not None:
                    spy.stop()
            out[str(rate)] = phase
        return out
    finally:
        await producer.stop()
        await collector.stop()


def _spy(ctx: Context, worker: Proc | None, profile_as: str | None, rate: int) -> Spy | None:
    if worker is None or profile_as is None or not ctx.plan.latency_profile:
        return None
    from benchmarks.profile import Spy  # which imports this module

    out = Path(ctx.plan.latency_profile)
    out.mkdir(parents=True, exist_ok=True)
    # 250 Hz: a phase is seconds long; --gil: the scorer's and the consumer thread's shares.
    return Spy(worker.pid, out / f"{profile_as}-{rate}.txt", gil=True, rate=250)


def profile_summary(directory: Path, top: int = 25) -> str:
    """Markdown: per profile of ``directory`` and per thread, the functions most often on
    the stack (inclusive) and at its top (self)."""
    from benchmarks.profile import summarize

    lines = [
        "# The latency worker under py-spy (--gil --nonblocking --threads, 250 Hz)",
        "",
        "Samples holding the GIL only, so a thread's samples are its share of the worker's CPU.",
        "",
    ]
    for path in sorted(directory.glob("*.txt")):
        threads = summarize(path, top)
        total = sum(t["samples"] for t in threads.values()) or 1
        lines += [f"## {path.stem}", ""]
        for thread, t in threads.items():
            share = 100 * t["samples"] / total
            lines += [f"### {thread}: {t['samples']} samples ({share:.0f} %)", "", "```"]
            lines += [f"{100 * n / t['samples']:5.1f} {name}" for name, n in t["inclusive"]]
            lines += ["--- self"]
            lines += [f"{100 * n / t['samples']:5.1f} {name}" for name, n in t["self"]]
            lines += ["```", ""]
    return "\n".join(lines)
