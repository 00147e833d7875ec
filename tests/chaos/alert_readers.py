"""Downstream readers of the alert topics that fall behind while the workers score: a
consumer group that handles one record at a time with a pause, and a member of another
group that fetches once and then never polls again while its session stays alive.

Neither shares anything with the workers but the broker, so scoring must go on at its own
pace; what they record (how far behind the slow group was) is the evidence, read the way
an operator reads consumer lag: the group's committed offsets against the topics' ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

# How often the slow group's lag is sampled.
LAG_SAMPLE_S = 1.0
# The stalled member must stay in its group for the whole run: aiokafka leaves the group
# once the application has not polled for max_poll_interval_ms (default 5 minutes).
STALLED_POLL_INTERVAL_MS = 3_600_000


@dataclass
class AlertReaderFigures:
    pause_s: float
    slow_read: int = 0
    stalled_read: int = 0
    # Alert records the slow group had not committed when every input was applied.
    lag_when_applied_all: int | None = None
    max_lag: int = 0
    # When the run ended: the slow group's lag, and the stalled group's (all it never read).
    final_lag: int = 0
    stalled_final_lag: int = 0
    lag_samples: list[tuple[float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class AlertReaders:
    def __init__(
        self, bootstrap: str, topics: Sequence[str], partitions: int, group_prefix: str,
        pause_s: float,
    ) -> None:  # fmt: skip
        self.bootstrap, self.topics = bootstrap, list(topics)
        self.tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self.slow_group = f"{group_prefix}-slow-alert-reader"
        self.stalled_group = f"{group_prefix}-stalled-alert-reader"
        self.figures = AlertReaderFigures(pause_s)
        self.started = time.monotonic()
        self.tasks: list[asyncio.Task[None]] = []
        self.consumers: list[AIOKafkaConsumer] = []
        self.probing = asyncio.Lock()  # the sampler and note_applied_all share one probe

    def _consumer(self, group: str, **options: int) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", **options,
        )  # fmt: skip
        self.consumers.append(consumer)
        return consumer

    async def start(self) -> None:
        slow = self._consumer(self.slow_group, max_poll_records=1)
        stalled = self._consumer(self.stalled_group, max_poll_interval_ms=STALLED_POLL_INTERVAL_MS)
        # Probes never subscribe: they only read their group's commits.
        self.stalled_probe = self._consumer(self.stalled_group)
        probe = self.probe = self._consumer(self.slow_group)
        for consumer in (slow, stalled, self.stalled_probe, probe):
            await consumer.start()
        slow.subscribe(self.topics)
        stalled.subscribe(self.topics)
        self.tasks = [
            asyncio.create_task(self._read_slowly(slow)),
            asyncio.create_task(self._fetch_once_then_stall(stalled)),
            asyncio.create_task(self._sample_lag(probe)),
        ]

    async def _read_slowly(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            await consumer.getone()
            await asyncio.sleep(self.figures.pause_s)  # the downstream work of one alert
            await consumer.commit()
            self.figures.slow_read += 1

    async def _fetch_once_then_stall(self, consumer: AIOKafkaConsumer) -> None:
        """The first fetch that returns records, committed; then no poll ever again (the
        heartbeat keeps the session and the assignment alive)."""
        while not self.figures.stalled_read:
            batches = await consumer.getmany(timeout_ms=1000)
            self.figures.stalled_read = sum(len(records) for records in batches.values())
        await consumer.commit()
        await asyncio.Event().wait()

    async def lag(self, probe: AIOKafkaConsumer) -> int:
        async with self.probing:
            ends = await probe.end_offsets(self.tps)
            total = 0
            for tp in self.tps:
                committed = await probe.committed(tp)
                total += ends[tp] - (committed if committed is not None and committed >= 0 else 0)
            return total

    async def _sample_lag(self, probe: AIOKafkaConsumer) -> None:
        while True:
            with contextlib.suppress(KafkaError, OSError):
                self._note(await self.lag(probe))
            await asyncio.sleep(LAG_SAMPLE_S)

    def _note(self, lag: int) -> None:
        f = self.figures
        f.lag_samples.append((round(time.monotonic() - self.started, 1), lag))
        f.max_lag, f.final_lag = max(f.max_lag, lag), lag

    async def note_applied_all(self) -> None:
        """Called once every input record is applied: how far behind the slow group is."""
        lag = await self.lag(self.probe)
        self._note(lag)
        self.figures.lag_when_applied_all = lag

    async def stop(self) -> AlertReaderFigures:
        """Stop the readers; a reader that failed on its own is an error of the run."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self.figures.errors.append(repr(task.exception()))
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            self._note(await self.lag(self.probe))
            self.figures.stalled_final_lag = await self.lag(self.stalled_probe)
        except (KafkaError, OSError) as e:
            self.figures.errors.append(f"reading the final lag: {e!r}")
        for consumer in self.consumers:
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()
        return self.figures
