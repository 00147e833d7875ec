"""Typed, frozen settings read from ENGAGEMENT_* environment variables.

A bad value stops the worker at start with a message naming the variable, never later in
the middle of a stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ENGAGEMENT_"


# What a Redis namespace may be made of (ENGAGEMENT_NAMESPACE, and a replay's --namespace).
NAMESPACE_PATTERN = r"^[A-Za-z0-9_.:-]+$"


class SettingsError(ValueError):
    """Raised with one line per bad variable, each naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # A Redis Cluster: every key of a shard shares one hash slot, so this is all it takes.
    redis_cluster: bool = False
    # A batch's reads and commit as calls touching one shard each, instead of one script
    # call each: for a Redis behind a proxy that routes every call by its keys' slot (a
    # cluster client always does this).
    redis_per_shard_calls: bool = False
    # Redis keys are prefixed with the namespace; a replay writes into its own one.
    namespace: str = Field(default="eng", pattern=NAMESPACE_PATTERN)
    clock: Literal["wall", "event"] = "wall"
    app_id: str = "engagement-scorer"

    topic_clickstream: str = "engagement.clickstream"
    topic_purchases: str = "engagement.purchases"
    topic_feedback: str = "engagement.feedback"
    topic_rerouted: str = "engagement.rerouted"
    topic_churn_risk: str = "engagement.churn-risk"
    topic_interventions: str = "engagement.interventions"
    topic_deadletter: str = "engagement.deadletter"
    # Also the number of state shards: a customer's shard is murmur2(customer_id) % this.
    partitions: int = Field(default=8, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)

    # Tansu (the embedded broker) has no InitProducerId, so idempotence is a setting.
    producer_idempotence: bool = False
    session_timeout_s: float = Field(default=10.0, gt=0)
    batch_max_events: int = Field(default=1000, ge=1)
    # How long a batch waits to fill: it adds to every alert's latency when input is light,
    # while under load batches fill long before it (benchmarks: default vs within_50ms).
    batch_within_s: float = Field(default=0.005, gt=0)
    # The longest a fetch may wait for records. Apache Kafka answers as soon as any arrive;
    # Tansu (the embedded broker) looks for them at the start, halfway, at three quarters
    # and so on, so a record can wait half of this there (Faust hard-codes 1500 ms).
    fetch_max_wait_ms: int = Field(default=100, ge=1, le=60_000)
    # How much a fetch waits to gather (up to fetch_max_wait_ms). 1: answered at the first
    # record. More trades latency for CPU when input is light: fewer, larger fetches
    # (BENCHMARKS.md: 15 % less worker CPU per event at 1,000 events/s with 1 MB and 10 ms).
    fetch_min_bytes: int = Field(default=1, ge=1)
    # Fetch in incremental sessions (KIP-227): each fetch names, and each reply carries,
    # only the partitions with something new, instead of all of them (streams/fetching.py).
    fetch_sessions: bool = True
    # While fetches keep returning records, each gathers for up to this long (fewer, larger
    # fetches when input is light); a fetch that came back empty waits for the first record
    # instead (fetch_min_bytes, fetch_max_wait_ms), so an idle worker fetches rarely.
    # 0: never gather. BENCHMARKS.md: CPU per event and latency at 1,000 events/s.
    fetch_gather_ms: int = Field(default=10, ge=0, le=60_000)
    # uvloop's event loop does the same work in less CPU than asyncio's (a third of the
    # worker's time is the loop's own: BENCHMARKS.md); asyncio stays for debugging.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    sweep_interval_s: float = Field(default=1.0, gt=0)
    sweep_batch: int = Field(default=2000, ge=1)
    outbox_relay_interval_s: float = Field(default=5.0, gt=0)
    redis_retry_max_s: float = Field(default=5.0, gt=0)
    # A Redis that stops answering is treated like one that is down: retried, not awaited.
    redis_timeout_s: float = Field(default=5.0, gt=0)
    # Event clock: how many read events may wait for slower partitions before the oldest
    # are applied anyway (bounding memory at the cost of strict event-time order).
    max_held_events: int = Field(default=200_000, ge=1)
    # Alerts committed but not yet acknowledged by Kafka beyond which scoring waits (they
    # are safe in the outbox meanwhile; the bound keeps a worker's memory bounded while
    # the broker is down or slow).
    max_unsent_alerts: int = Field(default=10_000, ge=1)
    # How records reach the scorer: "batches" hands each fetched batch over in one call
    # (streams/batches.py; needs the faust-streaming it was written for, else "agent");
    # "agent" is Faust's own per-message path, several times slower.
    ingest: Literal["batches", "agent"] = "batches"

    scoring_config: Path | None = None
    # BG/NBD and Gamma-Gamma parameters written by `engagement model fit` (JSON); without
    # them churn uses the scorer's own terms and CLV the simple form.
    model_params: Path | None = None
    # Where the worker keeps local files (Faust's data dir, the embedded services' state).
    state_dir: Path = Path(".engagement")
    web_port: int = Field(default=6066, ge=0, le=65535)
    web_host: str = "127.0.0.1"

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_host_and_port(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("scoring_config", "model_params")
    @classmethod
    def _config_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def input_topics(self) -> tuple[str, str, str]:
        return (self.topic_clickstream, self.topic_purchases, self.topic_feedback)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning validation errors into one message
    that names each bad ENGAGEMENT_* variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # overrides are checked by pydantic
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            lines.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
