"""What one worker process shares between its reading, its timers and its web views."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from streams import metrics
from streams.kafka.acks import InOrderAcks
from streams.kafka.publisher import Publisher
from streams.pipeline.delivery import AlertDelivery
from streams.pipeline.intake import Record
from streams.pipeline.outcomes import BatchOutcome
from streams.pipeline.processor import Scorer
from streams.settings import Settings
from streams.state.positions import (
    EXIT_STATE_LOST,
    GuardedStore,
    Positions,
    StateLost,
    done_frontier,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Runtime:
    """What the reading, timers and views share inside one worker process."""

    settings: Settings
    app: Any  # faust.App: untyped library
    store: GuardedStore
    scorer: Scorer
    publisher: Publisher
    positions: Positions
    alerts: AlertDelivery
    # Outbox entries seen by the previous relay pass, per shard.
    outbox_seen: dict[int, set[str]] = field(default_factory=dict)
    # Acknowledges finished records' tokens (Faust events or messages), in order, once
    # reading has started: one await per batch, not per record. The tokens of records read
    # and not acknowledged yet wait in ``acks``.
    ack: Callable[[list[Any]], Awaitable[None]] | None = None
    acks: InOrderAcks = field(default_factory=InOrderAcks)
    # Highest dead-lettered or rerouted offset per partition not yet recorded in Redis.
    delivered: dict[tuple[str, int], int] = field(default_factory=dict)

    def owned_shards(self) -> list[int]:
        """The shards this worker is assigned now."""
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # the consumer is not started yet
            return []
        shards = shards_of(assigned, self.settings.consumed_topics)
        metrics.OWNED_SHARDS.set(len(shards))
        return shards

    def forget(self, revoked: Any) -> None:
        """Partitions revoked from this worker: what it held of them is read again by
        their next owner."""
        self.scorer.buffer.forget((tp.topic, tp.partition) for tp in revoked)
        for tp in revoked:
            self.acks.forget((tp.topic, tp.partition))
            self.delivered.pop((tp.topic, tp.partition), None)

    async def finish(self, outcome: BatchOutcome) -> None:
        """Deliver a batch's dead letters and reroutes, then acknowledge the records it is
        done with: the consumer never commits past a record whose effects are not all
        delivered or, for alerts, committed to the outbox (sent in the background)."""
        await self.publisher.publish(dead_letters=outcome.dead_letters, reroutes=outcome.reroutes)
        await self.alerts.submit(outcome.alerts)
        assert self.ack is not None, "records are finished only once reading has started"
        # Only those still held: a partition revoked while the batch ran has forgotten the
        # records it held below them (its next owner reads them again), so recording its
        # dead letters done would skip those. Asked before finish() lets them go.
        delivered = [d.record for d in outcome.dead_letters] + [r.record for r in outcome.reroutes]
        held = self.acks.known(delivered) if delivered else []
        await self.ack(self.acks.finish(outcome.done))
        await self.record_delivered(held)

    async def record_delivered(self, records: Sequence[Record]) -> None:
        """Dead letters and reroutes (``records``) leave no applied offset in Redis; record
        how far their partitions are finished, or a restart after a Redis loss would re-read
        them from their last scored record (see streams/state/positions.py). A partition
        whose records below them are still waiting is recorded as far as it can be, and
        again later."""
        for r in records:
            tp = (r.topic, r.partition)
            self.delivered[tp] = max(self.delivered.get(tp, -1), r.offset)
        if self.delivered:
            frontier = done_frontier(self.delivered, self.acks.first_pending())
            await self.scorer.retrying(lambda: self.positions.record_done(frontier))
            for tp, offset in frontier.items():
                # Another batch may have finished meanwhile and moved this on.
                if self.delivered.get(tp) == offset:
                    del self.delivered[tp]

    async def finish_batch(self, records: Sequence[Record]) -> None:
        await self.finish(await self.scorer.process(records))

    async def score(self, messages: Sequence[Any], tokens: Sequence[Any]) -> None:
        """Score the records of ``messages``; ``tokens`` acknowledge them, one each."""
        started = time.perf_counter()
        records = [_record(message) for message in messages]
        self.acks.read_all(records, tokens)
        await stop_if_state_lost(self.finish_batch(records))
        metrics.BATCH_EVENTS.observe(len(records))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def finish_release(self) -> None:
        await self.finish(await self.scorer.release())


def shards_of(assigned: Iterable[Any], consumed: Collection[str]) -> list[int]:
    """The shards among ``assigned`` topic partitions: the partitions of the ``consumed``
    topics (the input topics and the rerouted one)."""
    return sorted({tp.partition for tp in assigned if tp.topic in consumed})


def exit_now(code: int) -> NoReturn:
    """Stop the process at once, as a crash would: the supervisor starts it again."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(code)


async def stop_if_state_lost(work: Awaitable[T]) -> T:
    """Redis lost writes under this worker: what it has read ahead of Redis must be read
    again, which only a fresh assignment (positioned from Redis) does safely. Stop at once,
    as a crash would: the supervisor starts the worker again."""
    try:
        return await work
    except StateLost as exc:
        log.critical("%s; exiting (%d) to resume from what Redis holds", exc, EXIT_STATE_LOST)
        exit_now(EXIT_STATE_LOST)


def _record(message: Any) -> Record:
    headers = message.headers
    # positionally: keywords cost a third more, once per record
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        dict(headers) if headers else {},
    )
