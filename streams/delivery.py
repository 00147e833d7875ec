"""Sending committed alerts to Kafka in the background, in commit order.

An alert is durable once its shard's commit put it in the outbox (in the same script call
as the state that raised it), so the records that caused it may be acknowledged without
waiting for Kafka: a worker that dies before sending leaves the entry to the outbox relay
of whoever owns the shard next. Scoring therefore never waits for alert delivery, except
when more than ``max_unsent`` alerts are waiting (a broker that is down or slow): then
``submit`` holds the caller until the backlog is back under the bound.

Entries leave the outbox (XDEL) once Kafka has acknowledged them. The relay asks
``is_unsent`` so that it never re-sends what this worker is still delivering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from streams import metrics
from streams.store import OutboxEntry

log = logging.getLogger(__name__)

Send = Callable[[Sequence[OutboxEntry]], Awaitable[None]]


class AlertDelivery:
    def __init__(
        self,
        send: Send,
        delete: Send,
        max_unsent: int = 10_000,
        max_per_send: int = 2_000,
        retry_s: float = 1.0,
    ) -> None:
        # ``send`` publishes and returns once Kafka acknowledged all (it retries itself);
        # ``delete`` removes the entries from the outbox.
        self.send, self.delete = send, delete
        self.max_unsent, self.max_per_send, self.retry_s = max_unsent, max_per_send, retry_s
        self.queue: list[OutboxEntry] = []
        self.unsent: set[tuple[int, str]] = set()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def is_unsent(self, entry: OutboxEntry) -> bool:
        return (entry.shard, entry.entry_id) in self.unsent

    async def submit(self, entries: Sequence[OutboxEntry]) -> None:
        """Queue entries for sending (those already queued are skipped); wait only while
        the backlog is over its bound."""
        fresh = [e for e in entries if (e.shard, e.entry_id) not in self.unsent]
        if fresh:
            self.queue.extend(fresh)
            self.unsent.update((e.shard, e.entry_id) for e in fresh)
            metrics.ALERTS_UNSENT.set(len(self.unsent))
            self._idle.clear()
            self._wake.set()
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="alert-delivery")
        while len(self.unsent) > self.max_unsent:
            self._room.clear()
            metrics.ALERT_BACKPRESSURE.inc()
            await self._room.wait()

    async def drained(self) -> None:
        """Return once everything submitted so far is sent and out of the outbox."""
        await self._idle.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self.queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self.queue[: self.max_per_send]
            try:
                await self.send(batch)
                await self.delete(batch)
            except Exception:
                # Still queued: sent again (same alert ids) after a pause. The publisher
                # and the store retry their own connection errors; this is the rest.
                log.exception("alert delivery failed; retrying in %.1fs", self.retry_s)
                await asyncio.sleep(self.retry_s)
                continue
            del self.queue[: len(batch)]
            self.unsent.difference_update((e.shard, e.entry_id) for e in batch)
            metrics.ALERTS_UNSENT.set(len(self.unsent))
            if len(self.unsent) <= self.max_unsent:
                self._room.set()
