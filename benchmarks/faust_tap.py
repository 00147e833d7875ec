"""The child side of benchmarks/faust_paths.py: do-nothing consumers built from the scorer's
own Faust App, topic and agent arguments, reading through Faust's agent or through a
batch-level tap (see faust_paths for the candidates and results)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks.tasks import Progress
from streams.batches import BatchReader

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


class BatchTap(BatchReader):
    """The scorer's batch reader (streams/batches.py) doing nothing but count and
    acknowledge through ``consumer.ack`` (Faust's own bookkeeping still decides what is
    committed); or, on the Conductor, fed one message at a time (``put_one``)."""

    def __init__(self, app: Any, size: int, within: float, tally: Tally, slow_s: float) -> None:
        super().__init__(app, size, within, self._count_and_ack)
        self.tally, self.slow_s = tally, slow_s

    async def _count_and_ack(self, batch: list[Any]) -> None:
        self.tally.batch(batch, time.time())  # the "processing"
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        ack = self.app.consumer.ack
        for m in batch:
            ack(m)

    async def put_one(self, message: Any) -> None:  # the Conductor's handler signature
        await self.app.flow_control.acquire()
        await self.put([message])

    def install_on_conductor(self, topic: Any) -> None:
        conductor, names = self.app.topics, set(topic.topics)
        build = conductor._build_handler

        def build_handler(tp: Any, channels: Any) -> Any:
            return self.put_one if tp.topic in names else build(tp, channels)

        conductor._build_handler = build_handler
        conductor.add(topic)
        self.app.on_partitions_revoked.connect(self._forget_revoked)


def run_child(spec: dict[str, Any]) -> None:
    from unittest import mock

    import faust

    import streams.app as scorer_app
    from scoring.config import load_config
    from streams.settings import load_settings

    settings = load_settings()
    asyncio.set_event_loop(asyncio.new_event_loop())
    with mock.patch.object(faust, "App") as fake:  # the scorer's arguments, not a copy
        as_agent = settings.model_copy(update={"ingest": "agent"})
        scorer_app.create_app(as_agent, load_config(settings.scoring_config), set())
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
            tap.install(topic)
        app.task(tap.run)
    faust.Worker(app, loglevel="warn", quiet=True).execute_from_commandline()
