"""Sending committed alerts to Kafka in the background, in commit order.

An alert is durable once its shard's commit put it in the outbox (in the same script call
as the state that raised it), so the records that caused it may be acknowledged without
waiting for Kafka: a worker that dies before sending leaves the entry to the outbox relay
of whoever owns the shard next. Scoring therefore never waits for alert delivery, except
when more than ``max_unsent`` alerts are waiting (a broker that is down or slow): then
``submit`` holds the caller until the backlog is back under the bound.

Entries leave the outbox once Kafka has acknowledged them: normally in their shard's next
commit (``SentAlerts``: the commit script deletes them with the batch it writes, so a
delivery round costs no Redis round trip of its own), or, for a shard no commit touched
within ``linger_s``, by a plain XDEL. The relay asks ``handles`` so that it never re-sends
what this worker is still delivering or removing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence

from streams import metrics
from streams.state.store import OutboxEntry

log = logging.getLogger(__name__)

Send = Callable[[Sequence[OutboxEntry]], Awaitable[None]]

# At most this many ids ride on one commit (the script unpacks them into one XDEL).
MAX_REMOVED_PER_COMMIT = 1_000


class SentAlerts:
    """Outbox entries Kafka has acknowledged, per shard, until they leave the outbox."""

    def __init__(self) -> None:
        # shard -> entry id -> (when it was acknowledged, the entry), oldest first
        self.by_shard: dict[int, dict[str, tuple[float, OutboxEntry]]] = {}

    def __len__(self) -> int:
        return sum(len(sent) for sent in self.by_shard.values())

    def __contains__(self, entry: OutboxEntry) -> bool:
        return entry.entry_id in self.by_shard.get(entry.shard, {})

    def add(self, entries: Sequence[OutboxEntry], at: float) -> None:
        for e in entries:
            self.by_shard.setdefault(e.shard, {})[e.entry_id] = (at, e)

    def ids(self, shard: int) -> list[str]:
        """What the shard's next commit removes from its outbox."""
        sent = self.by_shard.get(shard)
        if not sent:
            return []
        return list(sent)[:MAX_REMOVED_PER_COMMIT]

    def removed(self, shard: int, ids: Sequence[str]) -> None:
        sent = self.by_shard.get(shard)
        if sent:
            for entry_id in ids:
                sent.pop(entry_id, None)
            if not sent:
                del self.by_shard[shard]

    def oldest(self) -> float | None:
        return min((next(iter(s.values()))[0] for s in self.by_shard.values() if s), default=None)

    def acknowledged_before(self, at: float) -> list[OutboxEntry]:
        return [e for s in self.by_shard.values() for t, e in s.values() if t <= at]


class AlertDelivery:
    def __init__(
        self,
        send: Send,
        delete: Send,
        max_unsent: int = 10_000,
        max_per_send: int = 2_000,
        retry_s: float = 1.0,
        sent: SentAlerts | None = None,
        linger_s: float = 0.25,
    ) -> None:
        # ``send`` publishes and returns once Kafka acknowledged all (it retries itself);
        # ``delete`` removes the entries from the outbox.
        self.send, self.delete = send, delete
        self.max_unsent, self.max_per_send, self.retry_s = max_unsent, max_per_send, retry_s
        self.queue: list[OutboxEntry] = []
        self.unsent: set[tuple[int, str]] = set()
        # Shared with the scorer, whose commits remove them (Scorer.sent_alerts).
        self.sent = SentAlerts() if sent is None else sent
        self.linger_s = linger_s
        self._flush = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def handles(self, entry: OutboxEntry) -> bool:
        """Whether this worker is still sending the entry, or removing it from the outbox."""
        return (entry.shard, entry.entry_id) in self.unsent or entry in self.sent

    async def submit(self, entries: Sequence[OutboxEntry]) -> None:
        """Queue entries for sending (those already handled are skipped); wait only while
        the backlog is over its bound."""
        fresh = [e for e in entries if not self.handles(e)]
        if fresh:
            self.queue.extend(fresh)
            self.unsent.update((e.shard, e.entry_id) for e in fresh)
            metrics.ALERTS_UNSENT.set(len(self.unsent))
            self._idle.clear()
            self._wake.set()
            self._ensure_running()
        while len(self.unsent) > self.max_unsent:
            self._room.clear()
            metrics.ALERT_BACKPRESSURE.inc()
            await self._room.wait()

    async def drained(self) -> None:
        """Return once everything submitted so far is sent and out of the outbox (what no
        commit removed is deleted now rather than after ``linger_s``)."""
        if self.queue or self.sent:
            self._flush = True
            self._idle.clear()
            self._wake.set()
            self._ensure_running()
        await self._idle.wait()

    async def remove_sent(self) -> None:
        """Delete from the outbox what Kafka acknowledged and no commit removed yet (at a
        clean stop: the shards' next owner would otherwise publish them again)."""
        await self._delete_acknowledged_before(math.inf)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="alert-delivery")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self.queue:
                    await self._send_round()
                oldest = self.sent.oldest()
                if oldest is None:
                    self._flush = False
                    if not self.queue:
                        self._idle.set()
                        self._wake.clear()
                        await self._wake.wait()
                    continue
                # Left by no commit for ``linger_s`` (a quiet shard, or one no longer
                # ours): deleted here.
                wait = 0.0 if self._flush else oldest + self.linger_s - loop.time()
                if wait > 0 and not self.queue:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue
                if wait <= 0:
                    cutoff = loop.time() if self._flush else loop.time() - self.linger_s
                    await self._delete_acknowledged_before(cutoff)
            except Exception:
                # Still queued (or still sent, not removed): tried again after a pause. The
                # publisher and the store retry their own connection errors; this is the rest.
                log.exception("alert delivery failed; retrying in %.1fs", self.retry_s)
                await asyncio.sleep(self.retry_s)

    async def _delete_acknowledged_before(self, cutoff: float) -> None:
        entries = self.sent.acknowledged_before(cutoff)
        if entries:
            await self.delete(entries)
            for e in entries:
                self.sent.removed(e.shard, (e.entry_id,))

    async def _send_round(self) -> None:
        batch = self.queue[: self.max_per_send]
        await self.send(batch)
        self.sent.add(batch, asyncio.get_running_loop().time())
        del self.queue[: len(batch)]
        self.unsent.difference_update((e.shard, e.entry_id) for e in batch)
        metrics.ALERTS_UNSENT.set(len(self.unsent))
        if len(self.unsent) <= self.max_unsent:
            self._room.set()
