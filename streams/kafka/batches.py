"""Reading the input topics in whole fetched batches, under Faust's consumer.

Faust hands an agent one message at a time: per message its consumer awaits a callback
raced against a flow-control event, then the conductor, a channel queue, the stream and
the agent each take their turn. That path tops out below what the scorer itself can do,
while a fetched batch handed over in one call costs a fraction of it (BENCHMARKS.md,
"Questions already answered"). So the consumer's fetch loop (``Consumer._drain_messages``)
is replaced by the same loop handing each fetched batch of the input topics to a
``BatchReader``.

Everything else stays Faust's: group membership, rebalances, the seek to the committed
(or Redis-applied) offsets, read-offset and gap bookkeeping, and commits, which still
follow ``consumer.ack`` of each message. Records read before a rebalance (another
consumer generation), or while one is under way, are skipped unacknowledged, as Faust's
streams skip them; their partition is read again from its committed offset.

The loop re-implements a private method, and the fetch (``Consumer.getmany``) and the
acknowledgement (``Consumer.ack``) it relies on are re-implemented for whole batches too:
the same bookkeeping once per partition or per batch where Faust does it once per message
(an async generator step, the partition's end offset noted, a lock taken, a weak reference
made). The worker's consumer (streams/kafka/transport.py) runs the loop in place of Faust's
once a reader is installed; the sources it was written against are checked by digest
before the worker starts (streams/kafka/seam.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from mode.utils.futures import notify

from streams.kafka.continuity import ReadContinuity

log = logging.getLogger(__name__)

Handle = Callable[[list[Any]], Awaitable[None]]


def ack_all(consumer: Any, messages: Iterable[Any]) -> None:
    """faust-streaming 0.15.3's ``Consumer.ack`` of each message in turn, under one take
    of its lock and with one wake-up of a commit waiting for acknowledgements."""
    from faust.types.tuples import ack_lock

    acks_enabled_for = consumer.app.topics.acks_enabled_for
    committed_offsets, acked_indexes, acked = (
        consumer._committed_offset,
        consumer._acked_index,
        consumer._acked,
    )
    # A WeakSet (discard makes a weak reference): looked at only when it holds anything.
    discard = consumer._unacked_messages.discard if consumer._unacked_messages else None
    n_acked = 0
    with ack_lock:
        try:
            for message in messages:
                if message.acked:
                    continue
                message.acked = True
                if not acks_enabled_for(message.topic):
                    continue
                tp, offset = message.tp, message.offset
                committed = committed_offsets[tp]
                if committed is None or offset >= committed:
                    acked_index = acked_indexes[tp]
                    if offset not in acked_index:
                        if discard is not None:
                            discard(message)
                        acked_index.add(offset)
                        acked[tp].append(offset)
                        n_acked += 1
        finally:
            consumer._n_acked += n_acked
            notify(consumer._waiting_for_ack)


async def _fetch(consumer: Any, wait_s: float) -> list[tuple[Any, Any]]:
    """faust-streaming 0.15.3's ``Consumer.getmany(timeout=wait_s)``, as a list: the same
    (tp, message) pairs in the same (round-robin) order, each partition's end offset noted
    once per fetch instead of once per message. Nothing awaits between messages, so the
    flow is checked once (and each message carries its consumer generation, which
    ``BatchReader.run`` compares with the current one)."""
    records, active_partitions = await consumer._wait_next_records(wait_s)
    app = consumer.app
    if records is None or consumer.should_stop:
        return []
    if not consumer.flow_active:
        try:
            await consumer.perform_seek()
        except Exception as ex:
            log.warning("exception performing seek when flow not active %s", ex)
        return []
    buffered = consumer._buffered_partitions
    to_message = consumer._to_message
    track_end_offset = app.monitor.track_tp_end_offset
    noted: set[Any] = set()
    out = []
    for tp, record in consumer.scheduler.iterate(records):
        if active_partitions is None or tp in active_partitions or tp in buffered:
            if tp not in noted:
                noted.add(tp)
                track_end_offset(tp, consumer.highwater(tp))
            out.append((tp, to_message(tp, record)))
    return out


class BatchReader:
    """Messages of the input topics, handed to ``handle`` in lists of up to ``size`` (or
    what came within ``within`` seconds). The fetch loop waits (back pressure) while
    ``4 * size`` messages are waiting. ``handle`` acknowledges what it finishes."""

    def __init__(self, app: Any, size: int, within: float, handle: Handle) -> None:
        self.app, self.size, self.within, self.handle = app, size, within, handle
        # Messages waiting, each with its partition's seek epoch when it was fetched.
        self.pending: list[tuple[Any, int]] = []
        self.names: set[str] = set()  # the topics read in batches
        self.continuity = ReadContinuity(app.consumer, ())
        self._filled = asyncio.Event()
        self._taken = asyncio.Event()

    def install(self, topic: Any) -> None:
        """Subscribe to ``topic`` (its messages reach ``run``, not the conductor): the
        worker's consumer (streams/kafka/transport.py) then fetches through
        :func:`drain_batches` and keeps the continuity of its partitions."""
        self.app.topics.add(topic)
        consumer = self.app.consumer
        self.names = set(topic.topics)
        self.continuity.topics = self.names
        consumer.continuity = self.continuity
        consumer.batches = self
        self.app.on_partitions_revoked.connect(self._forget_revoked)

    async def put(self, messages: list[tuple[Any, int]]) -> None:
        self.pending.extend(messages)
        if len(self.pending) >= self.size:
            self._filled.set()
        while len(self.pending) >= 4 * self.size:
            self._taken.clear()
            await self._taken.wait()

    async def run(self) -> None:
        app = self.app
        while not app.should_stop:
            if len(self.pending) < self.size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._filled.wait(), self.within)
            self._filled.clear()
            batch, self.pending = self.pending[: self.size], self.pending[self.size :]
            self._taken.set()
            generation = app.consumer_generation_id
            if not app.flow_control.is_active():
                continue  # a rebalance is under way: read again once it is done
            current = [(m, e) for m, e in batch if m.generation_id == generation]
            admitted = await self.continuity.admit(current)
            if admitted:
                await self.handle(admitted)

    async def _forget_revoked(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        revoked = args[0]
        self.pending = [(m, e) for m, e in self.pending if m.tp not in revoked]
        self.continuity.forget(revoked)


async def drain_batches(consumer: Any, fetcher: Any, reader: BatchReader) -> None:
    """faust-streaming 0.15.3's Consumer._drain_messages, handing the fetched messages of
    the reader's topics to ``reader`` in one call (others still go one by one to Faust)."""
    names = reader.names
    consumer_stopped, fetcher_stopped = consumer._stopped.is_set, fetcher._stopped.is_set
    read_offset = consumer._read_offset
    continuity = reader.continuity
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    try:
        while not (consumer_stopped() or fetcher_stopped()):
            await consumer.sleep(0)
            if consumer.should_stop:
                continue
            batch: list[Any] = []
            others: list[Any] = []
            epochs = dict(continuity.epochs)  # partitions sought after this: continuity.tag
            for tp, message in await _fetch(consumer, 1.0):
                offset, r_offset = message.offset, read_offset[tp]
                if r_offset is not None and offset < r_offset:
                    continue  # read before a seek back: Faust drops these too
                if tp.topic not in names:
                    gap = offset - (r_offset or 0) > 1 and r_offset
                    if gap and acks_enabled_for(tp.topic):
                        await consumer._add_gap(tp, r_offset + 1, offset)
                    others.append(message)
                else:
                    # Gaps in the input topics are proven by streams/kafka/continuity.py.
                    batch.append(message)
                read_offset[tp] = offset
            tagged = await continuity.tag(batch, epochs)
            every = consumer._commit_every
            if every is not None and consumer._n_acked >= every:
                consumer._n_acked = 0
                await consumer.commit()
            for message in others:
                await consumer.wait_first(consumer.callback(message), consumer.suspend_flow.wait())
            if tagged:
                await consumer.wait_first(reader.put(tagged), consumer.suspend_flow.wait())
    except (asyncio.CancelledError, *consumer.consumer_stopped_errors):
        if not consumer.transport.app.should_stop:
            raise
