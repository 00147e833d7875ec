"""`engagement replay`: re-score the input topics' history into a separate namespace.

A consumer with no group and no commits reads the input topics from their beginning to
their end offsets at the start (so it terminates while producers write on), and scores
them on the event clock into another Redis namespace, with a new config if given. Its
alerts are counted, then deleted from the outbox or, with ``--emit``, published. "Old"
counts are the distinct alert ids on the alert topics (read the same way): what alert
consumers saw, from the live worker and from earlier ``--emit`` replays.

Misrouted records are rerouted locally, under ``<rerouted>.replay``: applied offsets
stored under the live rerouted topic's name would make a worker switched to this
namespace skip its records. Dead letters are counted, not published again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from scoring.config import ScoringConfig, load_config
from streams.kafka.publisher import Publisher
from streams.pipeline.intake import SOURCE_TOPIC_HEADER, Record
from streams.pipeline.outcomes import BatchOutcome
from streams.pipeline.processor import Scorer
from streams.settings import ENV_PREFIX, NAMESPACE_PATTERN, Settings, SettingsError
from streams.state.redis_client import redis_of
from streams.state.store import OutboxEntry, StateStore
from streams.tools.modelfit import load_params
from streams.tools.replay_report import (
    UNREADABLE,
    AlertKind,
    ProgressLine,
    ReplayResult,
    alert_kind,
    compare,
    comparison_json,
    format_table,
)


class ReplayRefused(ValueError):
    """Why a replay did not start, naming the option or setting to change."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    namespace: str
    emit: bool = False
    force: bool = False
    config: Path | None = None
    model_params: Path | None = None


class BoundedReader:
    """Reads partitions from their beginning to the end offsets they had at ``start``.

    An end offset is the larger of ListOffsets(latest) and the high watermark of the
    partition's first fetch response: Tansu (the embedded broker) answers ListOffsets with
    the base offset of the last record batch, short of the records in that batch.
    """

    def __init__(self, bootstrap: str, partitions: Sequence[TopicPartition], batch: int) -> None:
        self.bootstrap = bootstrap
        self.partitions = list(partitions)
        self.batch = batch
        self.begins: dict[TopicPartition, int] = {}
        self.ends: dict[TopicPartition, int] = {}
        self.done: set[TopicPartition] = set()
        self._fetched: set[TopicPartition] = set()  # a fetch response gave its watermark
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest",
        )  # fmt: skip
        await consumer.start()
        self._consumer = consumer
        if not self.partitions:
            return
        consumer.assign(self.partitions)
        self.begins = dict(await consumer.beginning_offsets(self.partitions))
        self.ends = dict(await consumer.end_offsets(self.partitions))
        await consumer.seek_to_beginning(*self.partitions)

    @property
    def total(self) -> int:
        return sum(self.ends[tp] - self.begins[tp] for tp in self.partitions)

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    def unread_end(self, topic: str, partition: int) -> int | None:
        """For the event clock: the end offset while the partition has records left to
        read, ``None`` once it is read to the end (or is not read by this reader). Before
        its first fetch the end is not sure yet, so the clock waits for it."""
        tp = TopicPartition(topic, partition)
        if tp in self.done or tp not in self.ends:
            return None
        return self.ends[tp] if tp in self._fetched else sys.maxsize

    async def batches(self) -> AsyncIterator[list[Record]]:
        assert self._consumer is not None, "start() first"
        consumer = self._consumer
        while len(self.done) < len(self.partitions):
            active = [tp for tp in self.partitions if tp not in self.done]
            fetched = await consumer.getmany(*active, timeout_ms=500, max_records=self.batch)
            for tp in active:
                if tp not in self._fetched and (hw := consumer.highwater(tp)) is not None:
                    self.ends[tp] = max(self.ends[tp], hw)
                    self._fetched.add(tp)
            records = [
                Record(m.topic, m.partition, m.offset, m.key, m.value, dict(m.headers or ()))
                for tp, ms in fetched.items()
                for m in ms
                if m.offset < self.ends[tp]
            ]
            for tp in active:
                # The position, not the last offset seen: transaction markers and compacted
                # records leave gaps before the end offset.
                if tp in self._fetched and await consumer.position(tp) >= self.ends[tp]:
                    self.done.add(tp)
                    consumer.pause(tp)
            if records:
                yield records


async def partition_counts(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Partition counts of the topics that exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return {
        d["topic"]: len(d["partitions"])
        for d in described
        if not d.get("error_code") and d.get("partitions")
    }


async def published_alerts(bootstrap: str, counts: Mapping[str, int]) -> Counter[AlertKind]:
    """Distinct alert ids on the alert topics up to their current end, by kind and level
    (delivery is at-least-once, so the same alert may be there more than once)."""
    tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
    reader = BoundedReader(bootstrap, tps, batch=5000)
    seen: dict[str, AlertKind] = {}
    await reader.start()
    try:
        async for records in reader.batches():
            for r in records:
                try:
                    alert_id, kind = alert_kind(r.value or b"")
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    # Not an alert this scorer wrote: shown as such rather than stopping.
                    alert_id, kind = f"{r.topic}:{r.partition}:{r.offset}", UNREADABLE
                seen[alert_id] = kind
    finally:
        await reader.stop()
    return Counter(seen.values())


def _check_namespace(settings: Settings, options: ReplayOptions) -> None:
    if not re.fullmatch(NAMESPACE_PATTERN, options.namespace):
        raise ReplayRefused(
            f"--namespace {options.namespace!r}: letters, digits and _ . : - only "
            f"(pattern {NAMESPACE_PATTERN})"
        )
    if options.namespace == settings.namespace:
        raise ReplayRefused(
            f"--namespace {options.namespace}: that is the live namespace "
            "(ENGAGEMENT_NAMESPACE); replay into a new one and switch the worker to it"
        )


async def _empty_namespace(client: Any, options: ReplayOptions) -> None:
    # Every key of a namespace starts with "<ns>:{s" (streams/state/store.py); the namespace's
    # characters are not glob characters.
    keys = []
    async for key in client.scan_iter(match=f"{options.namespace}:{{s*", count=1000):
        if not options.force:
            raise ReplayRefused(
                f"--namespace {options.namespace}: it already holds state; choose a new "
                "namespace, or add --force to delete that state and replay into it"
            )
        keys.append(key)
    for i in range(0, len(keys), 500):
        await client.unlink(*keys[i : i + 500])


def _load_config(settings: Settings, options: ReplayOptions) -> ScoringConfig:
    """The scoring config and model parameters the replay scores with: the options',
    else the settings' (as the worker would)."""
    path = options.config or settings.scoring_config
    where = "--config" if options.config else "ENGAGEMENT_SCORING_CONFIG"
    if path is not None and not path.is_file():
        raise ReplayRefused(f"{where} {path}: no such file")
    try:
        config = load_config(path)
    except (OSError, ValueError) as exc:  # TOML, validation and decoding errors
        raise ReplayRefused(f"{where} {path}: {exc}") from None
    params = options.model_params or settings.model_params
    if params is None:
        return config
    where = "--model-params" if options.model_params else "ENGAGEMENT_MODEL_PARAMS"
    try:
        return config.with_model(load_params(params))
    except SettingsError as exc:
        reason = str(exc).removeprefix(f"{ENV_PREFIX}MODEL_PARAMS: ")
        raise ReplayRefused(f"{where}: {reason}") from None


async def replay(
    settings: Settings, options: ReplayOptions, progress: TextIO | None = None
) -> ReplayResult:
    """Re-score the input topics' history into ``options.namespace``; see the module doc."""
    _check_namespace(settings, options)
    config = _load_config(settings, options)
    bootstrap = settings.kafka_bootstrap
    alert_topics = (settings.topic_churn_risk, settings.topic_interventions)
    counts = await partition_counts(bootstrap, [*settings.input_topics, *alert_topics])
    missing = [t for t in settings.input_topics if t not in counts]
    if missing:
        raise ReplayRefused(f"input topics not found on {bootstrap}: {', '.join(missing)}")
    client = redis_of(settings)
    try:
        await _empty_namespace(client, options)
        result = ReplayResult(options.namespace, options.emit)
        # Before the replay: with --emit it adds to the alert topics.
        published = {t: n for t, n in counts.items() if t in alert_topics}
        result.old = await published_alerts(bootstrap, published)
        await _rescore(settings, options, config, counts, client, result, progress or sys.stderr)
    finally:
        await client.aclose()
    return result


async def _rescore(
    settings: Settings,
    options: ReplayOptions,
    config: ScoringConfig,
    counts: Mapping[str, int],
    client: Any,
    result: ReplayResult,
    progress: TextIO,
) -> None:
    local_rerouted = f"{settings.topic_rerouted}.replay"
    aligned = {t for t in settings.input_topics if counts[t] == settings.partitions}
    store = StateStore(client, options.namespace, per_shard_calls=settings.redis_per_shard_calls)
    scorer = Scorer.for_settings(
        settings, store, config, aligned, clock="event", rerouted_topic=local_rerouted
    )
    tps = [TopicPartition(t, p) for t in settings.input_topics for p in range(counts[t])]
    reader = BoundedReader(settings.kafka_bootstrap, tps, settings.batch_max_events)
    publisher = Publisher.for_settings(settings)
    rerouted_offsets: dict[int, int] = {}

    async def settle_alerts(entries: Sequence[OutboxEntry]) -> None:
        for entry in entries:
            result.new[alert_kind(entry.value)[1]] += 1
        if entries and options.emit:
            await publisher.publish(alerts=entries)
        if entries:
            await scorer.retrying(lambda: store.delete_outbox(entries))

    async def finish(outcome: BatchOutcome) -> None:
        while True:
            result.applied += outcome.applied
            result.duplicates += outcome.duplicates
            result.dead_letters += len(outcome.dead_letters)
            await settle_alerts(outcome.alerts)
            if not outcome.reroutes:
                return
            result.rerouted += len(outcome.reroutes)
            again = []
            for rr in outcome.reroutes:
                offset = rerouted_offsets[rr.shard] = rerouted_offsets.get(rr.shard, -1) + 1
                headers = {SOURCE_TOPIC_HEADER: rr.source_topic.encode()}
                r = rr.record
                again.append(Record(local_rerouted, rr.shard, offset, r.key, r.value, headers))
            outcome = await scorer.process(again)

    misaligned = [tp for tp in tps if tp.topic not in aligned]

    def unread_end(topic: str, partition: int) -> int | None:
        if topic == local_rerouted:
            # Fed from the misaligned partitions: it has records to come until they are read.
            return sys.maxsize if any(tp not in reader.done for tp in misaligned) else None
        return reader.unread_end(topic, partition)

    scorer.buffer.highwater = unread_end
    await reader.start()
    bar = ProgressLine(reader.total, progress)
    try:
        async for records in reader.batches():
            result.events += len(records)
            await finish(await scorer.process(records))
            bar.total = reader.total
            bar.update(result.events)
        # Every partition is read to its end now, so the event clock passes every
        # waiting event; a second round would only mean the buffer misjudged that.
        for _ in range(2):
            if scorer.buffer.held:
                await finish(await scorer.release())
        if scorer.buffer.held:
            raise RuntimeError(f"{scorer.buffer.held} events still wait for the event clock")
        # The inactivity checks due up to each shard's last event time.
        shards = list(range(settings.partitions))
        while True:
            entries, swept = await scorer.sweep(shards, settings.sweep_batch)
            await settle_alerts(entries)
            if swept < settings.sweep_batch:
                break
    finally:
        await reader.stop()
        await publisher.stop()
    bar.total = reader.total
    bar.update(result.events, final=True)
    result.seconds = time.monotonic() - bar.started


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    options = ReplayOptions(
        namespace=args.namespace,
        emit=args.emit,
        force=args.force,
        config=args.config,
        model_params=args.model_params,
    )
    try:
        result = asyncio.run(replay(settings, options))
    except ReplayRefused as exc:
        print(f"replay refused: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nreplay interrupted: {options.namespace} holds part of it (--force)", file=sys.stderr
        )
        return 130
    if args.json:
        print(json.dumps(comparison_json(result), indent=2))
        return 0
    print(format_table(compare(result.old, result.new)))
    print(
        f"\n{result.events} events read, {result.applied} applied, {result.duplicates} "
        f"duplicates, {result.dead_letters} dead letters, {result.rerouted} rerouted; "
        f"alerts {'published' if result.emitted else 'not published (no --emit)'}.\n"
        f"Switch the worker to it with ENGAGEMENT_NAMESPACE={result.namespace}."
    )
    return 0
