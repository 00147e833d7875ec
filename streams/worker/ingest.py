"""How the input topics reach the scorer: whole fetched batches (streams/kafka/batches.py),
or Faust's per-message agent where the installed Faust allows no batch path and the
settings accept the agent (streams/kafka/seam.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from streams import metrics
from streams.kafka.batches import BatchReader, ack_all
from streams.worker.runtime import Runtime, exit_now

log = logging.getLogger(__name__)
# concurrency=1: with more, Faust can commit past a batch still in flight.
AGENT_OPTIONS = {"name": "score", "concurrency": 1}


def read_inputs(rt: Runtime, inputs: Any, batches: bool) -> None:
    """Feed the input topics to ``rt.score``: whole fetched batches when ``batches``, else
    through Faust's agent."""
    app, settings = rt.app, rt.settings
    if not batches:
        _read_through_agent(rt, inputs)
        return
    metrics.INGEST_PATH.labels("batches").set(1)

    async def ack_messages(messages: list[Any]) -> None:
        ack_all(app.consumer, messages)

    async def handle(messages: list[Any]) -> None:
        try:
            await rt.score(messages, messages)
        except Exception:
            # The fetch loop would wait for this reader for ever: stop as a crash would,
            # and let the supervisor start the worker again.
            log.critical("scoring failed; exiting", exc_info=True)
            exit_now(1)

    reader = BatchReader(app, settings.batch_max_events, settings.batch_within_s, handle)
    reader.install(inputs)

    async def read_batches() -> None:
        rt.ack = ack_messages
        await reader.run()

    app.task(read_batches)


def _read_through_agent(rt: Runtime, inputs: Any) -> None:
    settings = rt.settings
    metrics.INGEST_PATH.labels("agent").set(1)

    async def score(stream: Any) -> AsyncIterator[None]:
        async def ack_events(events: list[Any]) -> None:
            for event in events:
                await stream.ack(event)

        rt.ack = ack_events
        async for events in stream.noack_take(
            settings.batch_max_events, within=settings.batch_within_s
        ):
            await rt.score([e.message for e in events], events)
            yield None

    rt.app.agent(inputs, **AGENT_OPTIONS)(score)
