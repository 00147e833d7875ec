"""Measuring tasks, each run by the harness as its own process:

    python -m benchmarks.tasks SPEC.json

Settings come from ENGAGEMENT_* variables, exactly as for a worker. Faust redirects stdout
to its logger, so every task writes its result, as JSON, to ``spec["out"]`` (and, once its
first batch arrived, a marker to ``spec["out"] + ".first"``).

- ``faust``: the framework ceiling, a Faust agent that does nothing, on the worker's own
  app, input topic and agent options (streams.worker.wiring, streams.worker.ingest), with
  ``mode`` ``noack_take`` (then ``await stream.ack(e)`` per event, like the scorer) or
  ``take``, or ``batches``: the worker's batch path acknowledging each batch.
- ``aiokafka``: the physical limit, a plain consumer reading with ``getmany`` and decoding
  every value with orjson.
- ``naive``: the scoring without batching, in-process over records read beforehand.
- ``sweep``: ``Scorer.sweep`` over customers whose inactivity checks are all due.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from benchmarks.procs import write_json_atomic


def _spec(argv: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = orjson.loads(Path(argv[0]).read_bytes())
    return spec


class Progress:
    """Counts events; writes the first-batch marker and, at ``expected``, the result.

    events/s is timed from the assignment of the partitions (``assigned``) to the last
    event, like the scorer's; the rate from the first batch on is kept as a check."""

    def __init__(self, out: Path, expected: int, **extra: Any) -> None:
        self.out, self.expected, self.extra = out, expected, extra
        self.count = 0
        self.assigned: tuple[float, float] | None = None
        self.first: tuple[float, int, float] | None = None
        self.finished = False

    def assign(self) -> None:
        if self.assigned is None:
            self.assigned = (time.time(), time.process_time())

    def batch(self, n: int, at: float) -> None:
        self.count += n
        if self.first is None:
            self.first = (at, n, time.process_time())
            Path(f"{self.out}.first").write_text(str(at))
        if self.count >= self.expected and not self.finished:
            self.finished = True
            done, cpu = time.time(), time.process_time()
            first_at, first_n, _ = self.first
            assigned_at, assigned_cpu = self.assigned or (first_at, self.first[2])
            window = max(1e-9, done - assigned_at)
            result = {
                "events": self.count,
                "events_per_s": round(self.count / window, 1),
                "window_s": round(window, 3),
                "first_batch_after_s": round(first_at - assigned_at, 3),
                "events_per_s_after_first_batch": round(
                    (self.count - first_n) / max(1e-9, done - first_at), 1
                ),
                "cpu_cores": round((cpu - assigned_cpu) / window, 3),
                **self.extra,
            }
            write_json_atomic(self.out, result)


def run_faust(spec: dict[str, Any]) -> None:
    import faust

    from streams.settings import load_settings
    from streams.worker import wiring
    from streams.worker.ingest import AGENT_OPTIONS

    settings = load_settings()
    asyncio.set_event_loop(asyncio.new_event_loop())
    # The worker's own app and input topic, so the ceiling reads as the worker reads.
    app = wiring.faust_app(settings)
    topic = wiring.input_topic(app, settings)
    agent_kwargs = dict(AGENT_OPTIONS)
    mode = spec["mode"]
    size, within = settings.batch_max_events, settings.batch_within_s
    progress = Progress(Path(spec["out"]), spec["expected"], mode=mode, batch=size, within=within)

    async def noack_take(stream: Any) -> Any:
        async for events in stream.noack_take(size, within=within):
            at = time.time()
            for e in events:
                await stream.ack(e)
            progress.batch(len(events), at)
            yield None

    async def take(stream: Any) -> Any:
        async for values in stream.take(size, within=within):
            progress.batch(len(values), time.time())
            yield None

    async def on_assigned(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        if args and args[0]:
            progress.assign()

    app.on_partitions_assigned.connect(on_assigned)
    if mode == "batches":
        # The scorer's own path (streams/kafka/batches.py), doing nothing but acknowledge.
        from streams.kafka.batches import BatchReader

        async def ack_all(messages: list[Any]) -> None:
            at = time.time()
            for m in messages:
                app.consumer.ack(m)
            progress.batch(len(messages), at)

        reader = BatchReader(app, size, within, ack_all)
        reader.install(topic)
        app.task(reader.run)
    else:
        app.agent(topic, **agent_kwargs)(noack_take if mode == "noack_take" else take)
    faust.Worker(app, loglevel="warn", quiet=True).execute_from_commandline()


@asynccontextmanager
async def _from_beginning(settings: Any) -> AsyncIterator[tuple[Any, list[Any]]]:
    """A consumer without a group, assigned every input partition at its beginning."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p) for t in settings.input_topics for p in range(settings.partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        yield consumer, tps
    finally:
        await consumer.stop()


async def run_aiokafka(spec: dict[str, Any]) -> None:
    from streams.settings import load_settings

    settings = load_settings()
    async with _from_beginning(settings) as (consumer, _tps):
        size = settings.batch_max_events
        progress = Progress(Path(spec["out"]), spec["expected"], batch=size)
        progress.assign()
        while not progress.finished:
            batches = await consumer.getmany(timeout_ms=200, max_records=size)
            at = time.time()
            n = 0
            for records in batches.values():
                for r in records:
                    orjson.loads(r.value)
                n += len(records)
            if n:
                progress.batch(n, at)


async def _read_all(settings: Any, limit: int) -> list[Any]:
    """The first ``limit`` input records in publish (= event time) order."""
    from streams.pipeline.intake import Record

    async with _from_beginning(settings) as (consumer, tps):
        ends = await consumer.end_offsets(tps)
        raw = []
        behind = set(tps)
        while behind:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                raw.extend(records)
            for tp in list(behind):
                if await consumer.position(tp) >= ends[tp]:
                    behind.discard(tp)
    raw.sort(key=lambda r: (r.timestamp, r.topic, r.partition, r.offset))
    return [
        Record(r.topic, r.partition, r.offset, r.key, r.value, dict(r.headers or ()))
        for r in raw[:limit]
    ]


async def run_naive(spec: dict[str, Any]) -> None:
    """The scoring without Faust, over the same records: first as the worker batches it
    (``scorer_batched_in_process``, all records, for reference), then without batching
    (the naive baseline, the first ``limit`` records), in two forms:

    - ``scorer_per_event``: streams.pipeline.processor.Scorer.process called with one record at a
      time: per event one pipelined read (HGETALL meta + MGET) and one EVALSHA commit,
      i.e. the full semantics (applied offsets, due schedule, outbox), no batching.
    - ``get_set_per_event``: decode, GET the state, scoring.engine.apply_event, SET it:
      the textbook consumer, without offsets, schedule or outbox.

    Neither includes Kafka: the records are read before the clock starts.
    """
    from scoring import codec
    from scoring.config import load_config
    from scoring.engine import apply_event
    from streams.pipeline.intake import Decoder, shard_of
    from streams.pipeline.processor import AlertTopics, Scorer
    from streams.settings import load_settings
    from streams.state.redis_client import redis_of
    from streams.state.store import StateStore

    settings = load_settings()
    config = load_config(settings.scoring_config)
    read_started = time.perf_counter()
    everything = await _read_all(settings, 10**9)
    records = everything[: spec["limit"]]
    read_s = time.perf_counter() - read_started
    client = redis_of(settings)
    decoder = Decoder(*settings.input_topics, rerouted=settings.topic_rerouted)
    results: dict[str, Any] = {"read_s": round(read_s, 3)}
    try:
        # The scorer as the worker runs it, batches of BATCH_MAX_EVENTS, without Faust or
        # Kafka: what the worker could do if reading records cost nothing.
        batched = Scorer(
            StateStore(client, f"{settings.namespace}-c"),
            decoder,
            set(settings.input_topics),
            config,
            AlertTopics(settings.topic_churn_risk, settings.topic_interventions),
            shards=settings.partitions,
            clock=settings.clock,
            wall=time.time,
        )
        size, applied = settings.batch_max_events, 0
        started, cpu = time.perf_counter(), time.process_time()
        for lo in range(0, len(everything), size):
            applied += (await batched.process(everything[lo : lo + size])).applied
        applied += (await batched.release()).applied
        elapsed = time.perf_counter() - started
        results["scorer_batched_in_process"] = {
            "events": len(everything),
            "applied": applied,
            "seconds": round(elapsed, 3),
            "events_per_s": round(len(everything) / elapsed, 1),
            "cpu_cores": round((time.process_time() - cpu) / elapsed, 3),
        }

        store = StateStore(client, f"{settings.namespace}-a")
        scorer = Scorer(
            store,
            decoder,
            set(settings.input_topics),
            config,
            AlertTopics(settings.topic_churn_risk, settings.topic_interventions),
            shards=settings.partitions,
            clock=settings.clock,
            wall=time.time,
        )
        applied = 0
        started, cpu = time.perf_counter(), time.process_time()
        for record in records:
            applied += (await scorer.process([record])).applied
        elapsed = time.perf_counter() - started
        results["scorer_per_event"] = {
            "events": len(records),
            "applied": applied,
            "seconds": round(elapsed, 3),
            "events_per_s": round(len(records) / elapsed, 1),
            "cpu_cores": round((time.process_time() - cpu) / elapsed, 3),
        }

        keys = StateStore(client, f"{settings.namespace}-b")
        started, cpu = time.perf_counter(), time.process_time()
        for record in records:
            event = decoder.decode(record)
            key = keys.keys(shard_of(event.customer_id, settings.partitions)).customer(
                event.customer_id
            )
            raw = await client.get(key)
            state = codec.decode(raw) if raw is not None else None
            t = event.occurred_at.timestamp()
            outcome = apply_event(state, event, t, time.time(), config)
            await client.set(key, codec.encode(outcome.state))
        elapsed = time.perf_counter() - started
        results["get_set_per_event"] = {
            "events": len(records),
            "seconds": round(elapsed, 3),
            "events_per_s": round(len(records) / elapsed, 1),
            "cpu_cores": round((time.process_time() - cpu) / elapsed, 3),
        }
    finally:
        await client.aclose()
    write_json_atomic(Path(spec["out"]), results)


async def run_sweep(spec: dict[str, Any]) -> None:
    """Customers whose next check is due at one instant T (each history moved in time so
    that it is), written through StateStore.commit (unless ``write`` is false: another
    process wrote them); then (unless ``sweep`` is false) Scorer.sweep of ``shards`` (all by
    default) on the wall clock at T, called like the worker's sweep timer until no shard
    has a full page left, once the file ``go`` exists if one is named."""
    from prometheus_client import REGISTRY

    from benchmarks.workload import (
        due_clones,
        read_templates,
        still_due,
        sweep_all,
        sweeping_scorer,
        write_states,
    )
    from scoring.config import load_config
    from streams.cli import settle_heap
    from streams.settings import load_settings
    from streams.state.redis_client import redis_of
    from streams.state.store import StateStore

    settings = load_settings()
    config = load_config(settings.scoring_config)
    at = float(spec["at"])
    customers = int(spec["customers"])
    client = redis_of(settings)
    try:
        store = StateStore(client, settings.namespace)
        written = 0
        if spec.get("write", True):
            templates = read_templates(Path(spec["templates"]))
            written = await write_states(
                store, due_clones(templates, customers, at), settings.partitions
            )
        if not spec.get("sweep", True):
            write_json_atomic(Path(spec["out"]), {"customers_written": written})
            return
        scorer = sweeping_scorer(store, config, settings.partitions, at)
        shards = list(spec.get("shards", range(settings.partitions)))
        # The worker's collector settings, as the worker sets them when it starts
        # (streams.cli) and benchmarks.sweep_cost does; this section ran with Python's
        # defaults until 2026-11-24 (BENCHMARKS.md, Sweep).
        settle_heap()
        Path(f"{spec['out']}.first").write_text(str(time.time()))
        await asyncio.sleep(float(spec.get("pause_s", 0)))  # lets a profiler attach
        if "go" in spec:
            # Another process creates the file: there is no event to await.
            while not Path(spec["go"]).exists():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        swept_before = REGISTRY.get_sample_value("engagement_sweep_customers_total") or 0.0
        started, cpu, started_at = time.perf_counter(), time.process_time(), time.time()
        alerts, calls = await sweep_all(scorer, shards, settings.sweep_batch)
        elapsed, ended_at = time.perf_counter() - started, time.time()
        cpu_cores = (time.process_time() - cpu) / elapsed
        swept_total = (REGISTRY.get_sample_value("engagement_sweep_customers_total") or 0.0) - (
            swept_before
        )
        left = await still_due(store, shards, at)
    finally:
        await client.aclose()
    write_json_atomic(
        Path(spec["out"]),
        {
            "customers_written": written,
            "customers_swept": int(swept_total),
            "sweep_calls": calls,
            "page_per_shard": settings.sweep_batch,
            "alerts": alerts,
            "still_due": left,
            "seconds": round(elapsed, 3),
            "customers_per_s": round(swept_total / elapsed, 1),
            "cpu_cores": round(cpu_cores, 3),
            # wall clock, to put processes sweeping at once on one time line
            "started_at": started_at,
            "ended_at": ended_at,
        },
    )


def main(argv: list[str]) -> int:
    spec = _spec(argv)
    task = spec["task"]
    # Every task on the worker's default event loop unless told (ENGAGEMENT_EVENT_LOOP).
    if spec.get("loop", "uvloop") == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if task == "faust":
        run_faust(spec)
    elif task == "aiokafka":
        asyncio.run(run_aiokafka(spec))
    elif task == "naive":
        asyncio.run(run_naive(spec))
    elif task == "sweep":
        asyncio.run(run_sweep(spec))
    else:
        raise SystemExit(f"unknown task {task!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
