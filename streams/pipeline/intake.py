"""Decoding input records into events, and deciding which shard owns each customer."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.shards import murmur2
from scoring.state import slot_init

SOURCE_TOPIC_HEADER = "source_topic"
_EVENT_MODELS = (ClickstreamEvent, PurchaseEvent, FeedbackEvent)


@slot_init  # one per consumed message
@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka message, as the broker gave it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, bytes]


class RejectedRecord(ValueError):
    """An input that cannot be scored; the message says why, naming the field."""


@functools.lru_cache(maxsize=1 << 18)
def key_hash(key: bytes) -> int:
    """The hash Kafka's default partitioner gives a record key (murmur2, made positive).
    Cached: customers come back again and again (their events in, their alerts out), and
    without the compiled core (``make pure``) the hash costs a few microseconds."""
    return murmur2(key) & 0x7FFFFFFF


def shard_of(customer_id: str, shards: int) -> int:
    """The owner shard (and partition) of a customer: Kafka's default murmur2 partitioner,
    so producers using the Java client's default already write to the owner partition."""
    return key_hash(customer_id.encode()) % shards


class Decoder:
    """Maps each input topic to its event model and validates raw JSON against it."""

    def __init__(
        self, clickstream: str, purchases: str, feedback: str, rerouted: str | None = None
    ) -> None:
        self.models: dict[str, type[BaseModel]] = {
            clickstream: ClickstreamEvent,
            purchases: PurchaseEvent,
            feedback: FeedbackEvent,
        }
        # Each model's validator, called as model_validate_json does without its Python
        # wrapper, a noticeable part of an event's validation.
        self._validate_json = {
            topic: model.__pydantic_validator__.validate_json
            for topic, model in self.models.items()
        }
        self.rerouted = rerouted

    def source_topic(self, record: Record) -> str:
        """The input topic an event was first published to (rerouted ones say so)."""
        if record.topic == self.rerouted:
            source = record.headers.get(SOURCE_TOPIC_HEADER)
            if source is None:
                raise RejectedRecord(f"rerouted record without a {SOURCE_TOPIC_HEADER} header")
            return source.decode()
        return record.topic

    def decode(self, record: Record) -> InputEvent:
        source = self.source_topic(record)
        validate_json = self._validate_json.get(source)
        if validate_json is None:
            raise RejectedRecord(f"no event model for topic {source!r}")
        if record.value is None:
            raise RejectedRecord("empty message value (tombstone)")
        try:
            event = validate_json(record.value)
        except ValidationError as exc:
            raise RejectedRecord(_describe(exc)) from None
        assert isinstance(event, _EVENT_MODELS)
        return event


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "message"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
