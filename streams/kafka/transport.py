"""The worker's Kafka consumer: Faust's aiokafka consumer with the scorer's hooks.

Faust builds its consumer from the transport named by the URL scheme of its
``broker_consumer`` setting, and a package adds schemes through the ``faust.transports``
entry point: pyproject.toml registers ``engagement`` for :class:`Transport`, so the
worker's app consumes through ``engagement://`` and produces through Faust's own
``kafka://``. This subclass is the one place the scorer changes how Faust consumes; each
hook is off until the worker sets it, and with none set the consumer is Faust's:

- ``batches``: the fetch loop hands whole fetched batches of the input topics to the
  scorer (streams/kafka/batches.py) instead of one message at a time to an agent;
- ``continuity``: every seek is noted and commits start at the committed offset
  (streams/kafka/continuity.py);
- ``repositioning``: partitions resume where Redis says, and no commit goes out before
  Redis is checked (streams/kafka/repositioning.py);
- ``fetch_bounds``: the fetch wait and size Faust hard-codes, and incremental fetch
  sessions (streams/kafka/fetching.py).

The methods overridden here are listed, with the digests of the sources they were written
against, in streams/kafka/seam.py, which the worker checks before it starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.kafka.batches import BatchReader, drain_batches
from streams.kafka.continuity import ReadContinuity
from streams.kafka.fetching import FetchBounds
from streams.kafka.repositioning import Repositioning

T = TypeVar("T")

SCHEME = "engagement"


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        kafka_consumer = super()._create_worker_consumer(transport)
        bounds = cast(Consumer, self.consumer).fetch_bounds
        if bounds is not None:
            bounds.apply(kafka_consumer)
        return kafka_consumer


class Consumer(faust_aiokafka.Consumer):
    batches: BatchReader | None = None
    continuity: ReadContinuity | None = None
    repositioning: Repositioning | None = None
    fetch_bounds: FetchBounds | None = None

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        if self.batches is None:
            await super()._drain_messages(fetcher)
        else:
            await drain_batches(self, fetcher, self.batches)

    async def seek(self, partition: Any, offset: int) -> None:
        await super().seek(partition, offset)
        if self.continuity is not None:
            self.continuity.note_seek(partition, offset)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        if self.continuity is not None:
            self.continuity.note_seeks_to_read_offsets(self.assignment(), self._read_offset)
        if self.repositioning is not None:
            await self.repositioning.resume(self)

    def _new_offset(self, tp: Any) -> int | None:
        if self.continuity is None:
            return super()._new_offset(tp)
        return self.continuity.new_offset(tp)

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        # Before Faust takes the offsets off its acknowledged lists: it puts nothing back.
        tps = list(tps)
        if self.repositioning is not None and not await self.repositioning.may_commit(tps):
            return False
        return bool(await super()._commit_tps(tps, start_new_transaction))

    def committed_offset(self, tp: Any) -> int | None:
        """The group's committed offset of ``tp`` as Faust keeps it (None: none known)."""
        value = self._committed_offset.get(tp)
        return int(value) if value is not None else None

    def set_committed_offset(self, tp: Any, offset: int) -> None:
        """Have Faust compare new commits of ``tp`` with ``offset``."""
        self._committed_offset[tp] = offset

    async def on_kafka_client(
        self, work: Callable[[Any, Callable[..., Awaitable[Any]]], Awaitable[T]]
    ) -> T | None:
        """``work(client, call_thread)`` with the aiokafka client of this consumer, which
        lives in Faust's consumer thread (``call_thread`` runs a coroutine function there);
        None before the consumer has started."""
        thread = self._thread
        kafka_consumer = thread._consumer
        if kafka_consumer is None:
            return None
        return await work(kafka_consumer._client, thread.call_thread)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
