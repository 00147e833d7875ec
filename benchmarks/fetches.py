"""What a light input costs a consumer in fetches (``python -m benchmarks.experiments
fetches``): a plain aiokafka consumer, no Faust, no scorer, reading 1,000 events/s of
200 bytes (a producer lingering 5 ms, as in the latency section) from one 8-partition
topic, while assigned either that topic only or four such topics, as the worker is
(clickstream, purchases, feedback, rerouted: 32 partitions). With the worker's fetch
bounds (100 ms, 1 byte: a fetch is answered at the first record), with fetches always
gathering for 10 ms (1 MB, 10 ms), with incremental fetch sessions, and with the worker's
default (streams/fetching.py): sessions, and fetches gathering 10 ms while records keep
coming.

The consumer runs in a thread of its own with its own event loop, as Faust's consumer
does, and its CPU is that thread's (``time.thread_time``). Reports fetch responses per
second, records per fetch, and the thread's CPU per event and per fetch; then the same
consumers idle (no events), for what an idle worker's fetching costs.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streams import fetching
from streams.fetching import FetchPolicy
from streams.topics import create_topics

RATE = 1_000
SECONDS = 10.0
PARTITIONS = 8
# (name, topics assigned, fetch_max_wait_ms, fetch_min_bytes, the worker's fetch policy)
Case = tuple[str, int, int, int, FetchPolicy | None]
CASES: tuple[Case, ...] = (
    ("1 topic, answered at the first record", 1, 100, 1, None),
    ("4 topics, answered at the first record", 4, 100, 1, None),
    ("4 topics, answered at the first record, sessions", 4, 100, 1, FetchPolicy()),
    ("4 topics, gathering 10 ms always", 4, 10, 1_000_000, None),
    # the worker's default
    (
        "4 topics, sessions, gathering 10 ms while records come",
        4,
        100,
        1,
        FetchPolicy(gather_ms=10),
    ),
)


class _Reader(threading.Thread):
    """Reads ``tps`` until told to stop; counts records and fetch responses, and the CPU
    of this thread alone."""

    def __init__(
        self,
        bootstrap: str,
        tps: list[TopicPartition],
        wait_ms: int,
        min_bytes: int,
        policy: FetchPolicy | None,
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.tps, self.wait_ms, self.min_bytes = bootstrap, tps, wait_ms, min_bytes
        self.policy = policy
        self.ready = threading.Event()
        # Set once the events are sent: read until that many arrive, or the deadline.
        self.expected: int | None = None
        self.deadline = float("inf")
        self.records = self.fetches = 0
        self.cpu_s = self.wall_s = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as exc:  # reported by the caller
            self.error = exc
            self.ready.set()

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.wait_ms,
            fetch_min_bytes=self.min_bytes,
        )
        if self.policy is not None and not fetching.use(consumer, self.policy):
            raise RuntimeError("this aiokafka is not the one streams/fetching.py patches")
        await consumer.start()
        try:
            consumer.assign(self.tps)
            await consumer.seek_to_end(*self.tps)
            await consumer.getmany(timeout_ms=200)
            fetcher = consumer._fetcher
            proc = fetcher._proc_fetch_request

            async def counted(*args: Any, **kwargs: Any) -> Any:
                self.fetches += 1
                return await proc(*args, **kwargs)

            fetcher._proc_fetch_request = counted
            self.ready.set()
            cpu, wall = time.thread_time(), time.monotonic()
            while self.expected is None or (
                self.records < self.expected and time.monotonic() < self.deadline
            ):
                batches = await consumer.getmany(timeout_ms=200)
                self.records += sum(len(rs) for rs in batches.values())
            self.cpu_s, self.wall_s = time.thread_time() - cpu, time.monotonic() - wall
        finally:
            await consumer.stop()


async def _case(
    bootstrap: str,
    topics: list[str],
    case: Case,
    rate: int,
    seconds: float,
) -> dict[str, Any]:
    _, n_topics, wait, min_bytes, policy = case
    tps = [TopicPartition(t, p) for t in topics[:n_topics] for p in range(PARTITIONS)]
    reader = _Reader(bootstrap, tps, wait, min_bytes, policy)
    reader.start()
    while not reader.ready.is_set():  # noqa: ASYNC110 - a thread's event, not a task's
        await asyncio.sleep(0.05)
    if reader.error is not None:
        raise reader.error
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    loop = asyncio.get_running_loop()
    count = int(rate * seconds)
    try:
        started, sent = loop.time(), 0
        while sent < count:
            due = min(count, int((loop.time() - started) * rate) + 1)
            for i in range(sent, due):
                await producer.send(topics[0], b"x" * 200, key=f"c{i}".encode())
            sent = due
            await asyncio.sleep(0.001)
        await producer.flush()
        if not count:  # idle: what fetching nothing costs
            await asyncio.sleep(seconds)
    finally:
        await producer.stop()
    reader.deadline = time.monotonic() + 30
    reader.expected = count
    await asyncio.to_thread(reader.join, 40)
    if reader.error is not None:
        raise reader.error
    fetches = max(1, reader.fetches)
    return {
        "partitions_assigned": len(tps),
        "fetch_max_wait_ms": wait,
        "fetch_min_bytes": min_bytes,
        "fetch_sessions": policy is not None and policy.sessions,
        "fetch_gather_ms": policy.gather_ms if policy is not None else 0,
        "events_sent": count,
        "records": reader.records,
        "fetches_per_s": round(reader.fetches / reader.wall_s, 1),
        "records_per_fetch": round(reader.records / fetches, 1),
        "consumer_cpu_cores": round(reader.cpu_s / reader.wall_s, 3),
        "consumer_cpu_us_per_event": round(1e6 * reader.cpu_s / max(1, reader.records), 1),
        "consumer_cpu_us_per_fetch": round(1e6 * reader.cpu_s / fetches, 1),
    }


async def fetch_costs(
    bootstrap: str, repeats: int = 2, rate: int = RATE, seconds: float = SECONDS
) -> dict[str, list[dict[str, Any]]]:
    """Each case ``repeats`` times, the cases alternated: at ``rate`` events/s, then idle
    (no events) for as long."""
    token = uuid.uuid4().hex[:6]
    topics = [f"fetches-{token}-{i}" for i in range(4)]
    await create_topics(bootstrap, topics, PARTITIONS)
    out: dict[str, list[dict[str, Any]]] = {}
    for _ in range(repeats):
        for r in (rate, 0):
            for case in CASES:
                name = f"{case[0]}, {f'{r:,} events/s' if r else 'idle'}"
                out.setdefault(name, []).append(await _case(bootstrap, topics, case, r, seconds))
    return out
