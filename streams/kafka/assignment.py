"""Input topics missing from the worker's view of the cluster are looked up again at once.

The group's leader assigns partitions from its consumer's cached cluster metadata. A worker
that started while the broker was going down had asked for its topics' metadata in vain, and
when the broker came back the group coordinator answered before any metadata did (or a
broker just restarted answered before it led its partitions again, and aiokafka drops such
topics from its cache). The rebalance it led then assigned nothing of those topics, and
aiokafka notices them again, and rebalances, only at its next periodic refresh, after
``metadata_max_age_ms`` (5 minutes in Faust), while the whole group reads nothing. Kafka's
Java consumer asks again for subscribed topics it does not know after ``retry.backoff.ms``.
So does the worker: a timer looks for the input topics in the consumer's metadata every
second and, while one is missing, asks for fresh metadata (once per tick, so a broker still
down is not asked in a loop). When the partitions are back, aiokafka's coordinator sees the
group's topics change and rejoins the group.

Found by the fault suite (``combined`` on Apache Kafka): a worker restarted as the broker
was restarted led the next rebalance with all its topics missing, and owned nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def missing_topics(cluster: Any, topics: Iterable[str]) -> list[str]:
    """The ``topics`` of which aiokafka's ClusterMetadata ``cluster`` knows no partition."""
    return sorted(t for t in topics if not cluster.partitions_for_topic(t))


class MissingTopicsWatch:
    """Asks an aiokafka client for fresh metadata while any of ``topics`` is missing from
    it; logs when topics stay missing past one check (not at start, before the first
    metadata arrives) and when they are back."""

    interval_s = 1.0  # how often the worker checks (Kafka's retry.backoff.ms is 100 ms)

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)
        self.missing: list[str] = []
        self.checks_missing = 0  # consecutive checks that found some missing

    async def check(self, client: Any, refresh: Any = None) -> list[str]:
        """The topics missing from ``client``'s metadata now. When some are, a metadata
        update is requested and waited for: by ``refresh(client.force_metadata_update)``
        when given (the call in the client's own event loop), else directly."""
        missing = missing_topics(client.cluster, self.topics)
        if not missing:
            if self.checks_missing > 1:
                log.info("input topics back in the consumer's cluster metadata")
            self.missing, self.checks_missing = [], 0
            return missing
        self.checks_missing += 1
        if self.checks_missing == 2 or (self.checks_missing > 2 and missing != self.missing):
            log.warning(
                "input topics %s missing from the consumer's cluster metadata (a broker "
                "restarting?): asking for it again every %.0f s",
                ", ".join(missing),
                self.interval_s,
            )
        self.missing = missing
        if refresh is None:
            await client.force_metadata_update()
        else:
            await refresh(client.force_metadata_update)
        return missing


async def check_worker_consumer(watch: MissingTopicsWatch, consumer: Any) -> list[str]:
    """``watch.check`` on the aiokafka client of the worker's consumer
    (streams/kafka/transport.py), whose client lives in Faust's consumer thread: the
    refresh is run there."""
    try:
        missing = await consumer.on_kafka_client(watch.check)
    except Exception as exc:  # the consumer stopping, say: the next tick tries again
        log.warning("could not look up the input topics' metadata: %r", exc)
        return watch.missing
    return [] if missing is None else list(missing)  # None: not started yet
