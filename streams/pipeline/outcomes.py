"""What scoring a batch comes to: records that become dead letters or are rerouted to
their owner partition, alerts written, and the records finished with."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.pipeline.intake import Record
from streams.state.store import OutboxEntry


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str


@dataclass(frozen=True, slots=True)
class Reroute:
    record: Record
    shard: int
    source_topic: str


@dataclass(slots=True)
class BatchOutcome:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    reroutes: list[Reroute] = field(default_factory=list)
    alerts: list[OutboxEntry] = field(default_factory=list)
    # Records finished with: acknowledge them once the outputs above are delivered.
    done: list[Record] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    # (topic, outcome) -> records, for the events metric
    by_topic: dict[tuple[str, str], int] = field(default_factory=dict)

    def tally(self, topic: str, outcome: str, n: int = 1) -> None:
        """``n`` more records of ``topic`` applied, duplicate or redelivered."""
        key = (topic, outcome)
        self.by_topic[key] = self.by_topic.get(key, 0) + n
        if outcome == "applied":
            self.applied += n
        elif outcome == "duplicate":
            self.duplicates += n
        elif outcome == "redelivered":
            self.redelivered += n
