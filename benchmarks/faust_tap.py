"""The child side of benchmarks/faust_paths.py: do-nothing consumers built from the scorer's
own Faust App, topic and agent arguments, reading through Faust's agent or through a
batch-level tap (see faust_paths for the candidates and results)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import types
from pathlib import Path
from typing import Any

from benchmarks.tasks import Progress

# candidate -> (ingestion path, App settings over the scorer's, extra environment)
CANDIDATES: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "agent": ("agent", {}, {}),
    "agent_big_buffers": (
        "agent",
        {"broker_max_poll_records": 5000, "stream_buffer_maxsize": 32768},
        {},
    ),
    "agent_no_cython": ("agent", {}, {"NO_CYTHON": "1"}),
    "tap_conductor": ("conductor", {}, {}),
    "tap_drain": ("drain", {}, {}),
}


class Tally:
    """Counts records by (topic, partition, offset): duplicates, and (``seen_log``) each
    record seen, appended per batch for the parent to check across processes."""

    def __init__(self, progress: Progress, seen_log: Path | None) -> None:
        self.progress, self.seen_log = progress, seen_log
        self.seen: set[tuple[str, int, int]] = set()
        self.duplicates = 0

    def batch(self, messages: list[Any], at: float) -> None:
        lines = []
        for m in messages:
            key = (m.topic, m.partition, m.offset)
            if key in self.seen:
                self.duplicates += 1
            self.seen.add(key)
            if self.seen_log is not None:
                lines.append(f"{m.topic} {m.partition} {m.offset}\n")
        if self.seen_log is not None:
            with self.seen_log.open("a") as handle:
                handle.write("".join(lines))
        self.progress.extra.update(distinct=len(self.seen), duplicates=self.duplicates)
        self.progress.batch(len(messages), at)


class BatchTap:
    """Raw Messages of the input topics, handed over in lists of up to ``size`` (or what
    came within ``within`` seconds) to ``handle``, then acknowledged one by one through
    ``consumer.ack``: Faust's own bookkeeping still decides what is committed.

    ``put`` blocks (back pressure on the fetch loop) while ``4 * size`` wait."""

    def __init__(self, app: Any, size: int, within: float, tally: Tally, slow_s: float) -> None:
        self.app, self.size, self.within, self.tally, self.slow_s = app, size, within, tally, slow_s
        self.pending: list[Any] = []
        self.filled = asyncio.Event()
        self.taken = asyncio.Event()

    async def put(self, messages: list[Any]) -> None:
        self.pending.extend(messages)
        if len(self.pending) >= self.size:
            self.filled.set()
        while len(self.pending) >= 4 * self.size:
            self.taken.clear()
            await self.taken.wait()

    async def put_one(self, message: Any) -> None:  # the Conductor's handler signature
        await self.app.flow_control.acquire()
        await self.put([message])

    async def run(self) -> None:
        app = self.app
        while not app.should_stop:
            if len(self.pending) < self.size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.filled.wait(), self.within)
            self.filled.clear()
            batch, self.pending = self.pending[: self.size], self.pending[self.size :]
            self.taken.set()
            # Read before a rebalance, or while one is under way: the partition is sought
            # back to its committed offset and read again. Like Stream, skip these
            # (unacknowledged): processed now, their acks could not be committed.
            generation = app.consumer_generation_id
            if not app.flow_control.is_active():
                batch = []
            batch = [m for m in batch if m.generation_id == generation]
            if not batch:
                continue
            self.tally.batch(batch, time.time())  # the "processing"
            if self.slow_s:
                await asyncio.sleep(self.slow_s)
            ack = app.consumer.ack
            for m in batch:
                ack(m)

    async def forget_revoked(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        revoked = args[0]
        self.pending = [m for m in self.pending if m.tp not in revoked]

    def install_on_conductor(self, topic: Any) -> None:
        conductor, names = self.app.topics, set(topic.topics)
        build = conductor._build_handler

        def build_handler(tp: Any, channels: Any) -> Any:
            return self.put_one if tp.topic in names else build(tp, channels)

        conductor._build_handler = build_handler
        conductor.add(topic)

    def install_on_drain(self, topic: Any) -> None:
        self.app.topics.add(topic)
        consumer = self.app.consumer
        consumer._drain_messages = types.MethodType(_batch_drain(self, set(topic.topics)), consumer)


def _batch_drain(tap: BatchTap, names: set[str]) -> Any:
    """Consumer._drain_messages of faust-streaming 0.15.3, handing a fetched batch of the
    ``names`` topics to ``tap`` in one call (others still go message by message)."""

    async def drain(consumer: Any, fetcher: Any) -> None:
        consumer_stopped, fetcher_stopped = consumer._stopped.is_set, fetcher._stopped.is_set
        read_offset = consumer._read_offset
        acks_enabled_for = consumer.app.topics.acks_enabled_for
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                await consumer.sleep(0)
                if consumer.should_stop:
                    continue
                batch: list[Any] = []
                others: list[Any] = []
                async for tp, message in consumer.getmany(timeout=1.0):
                    offset, r_offset = message.offset, read_offset[tp]
                    if r_offset is not None and offset < r_offset:
                        continue
                    if offset - (r_offset or 0) > 1 and r_offset and acks_enabled_for(tp.topic):
                        await consumer._add_gap(tp, r_offset + 1, offset)
                    read_offset[tp] = offset
                    (batch if tp.topic in names else others).append(message)
                every = consumer._commit_every
                if every is not None and consumer._n_acked >= every:
                    consumer._n_acked = 0
                    await consumer.commit()
                for message in others:
                    await consumer.wait_first(
                        consumer.callback(message), consumer.suspend_flow.wait()
                    )
                if batch:
                    await consumer.wait_first(tap.put(batch), consumer.suspend_flow.wait())
        except (asyncio.CancelledError, *consumer.consumer_stopped_errors):
            if not consumer.transport.app.should_stop:
                raise

    return drain


def run_child(spec: dict[str, Any]) -> None:
    from unittest import mock

    import faust

    import streams.app as scorer_app
    from scoring.config import load_config
    from streams.settings import load_settings

    settings = load_settings()
    asyncio.set_event_loop(asyncio.new_event_loop())
    with mock.patch.object(faust, "App") as fake:  # the scorer's arguments, not a copy
        scorer_app.create_app(settings, load_config(settings.scoring_config), set())
    app_args, app_kwargs = fake.call_args
    topic_args, topic_kwargs = fake.return_value.topic.call_args
    agent_kwargs = fake.return_value.agent.call_args.kwargs
    path, overrides, _env = CANDIDATES[spec["candidate"]]
    app = faust.App(*app_args, **{**app_kwargs, **overrides})
    topic = app.topic(*topic_args, **topic_kwargs)
    size, within = settings.batch_max_events, settings.batch_within_s
    progress = Progress(Path(spec["out"]), spec["expected"], candidate=spec["candidate"])
    seen_log = Path(spec["seen_log"]) if spec.get("seen_log") else None
    tally = Tally(progress, seen_log)
    slow_s = float(spec.get("slow_s", 0.0))

    async def on_assigned(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        if args and args[0]:
            progress.assign()

    app.on_partitions_assigned.connect(on_assigned)
    if path == "agent":

        async def noack_take(stream: Any) -> Any:
            async for events in stream.noack_take(size, within=within):
                tally.batch([e.message for e in events], time.time())
                if slow_s:
                    await asyncio.sleep(slow_s)
                for e in events:
                    await stream.ack(e)
                yield None

        app.agent(topic, **agent_kwargs)(noack_take)
    else:
        tap = BatchTap(app, size, within, tally, slow_s)
        if path == "conductor":
            tap.install_on_conductor(topic)
        else:
            tap.install_on_drain(topic)
        app.task(tap.run)
        app.on_partitions_revoked.connect(tap.forget_revoked)
    faust.Worker(app, loglevel="warn", quiet=True).execute_from_commandline()
