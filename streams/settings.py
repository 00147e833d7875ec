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
    """Every setting, read from ENGAGEMENT_<NAME> variables.

    The descriptions are the user's reference: scripts/configuration_doc.py writes
    docs/CONFIGURATION.md from them (a unit test fails when the two differ).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        description="The Kafka brokers to connect to, as host:port, several separated by "
        "commas (kafka-1:9092,kafka-2:9092).",
    )
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="The Redis that keeps every customer's state, as a URL such as "
        "redis://:password@redis:6379/0. It is a secret: never logged or printed.",
    )
    # Every key of a shard shares one hash slot, so a cluster client is all it takes.
    redis_cluster: bool = Field(
        default=False,
        description="true when ENGAGEMENT_REDIS_URL points at a Redis Cluster; false for a "
        "single Redis server.",
    )
    redis_per_shard_calls: bool = Field(
        default=False,
        description="true for a Redis behind a proxy that routes every call by its keys: "
        "each batch's reads and commit then go as calls touching one shard each, instead of "
        "one script call each. Implied by ENGAGEMENT_REDIS_CLUSTER; false for a plain Redis.",
    )
    namespace: str = Field(
        default="eng",
        pattern=NAMESPACE_PATTERN,
        description="The prefix of every Redis key the scorer writes (letters, digits and "
        "_ . : -). Change it to keep two sets of state apart in one Redis, such as a "
        "replay's and the live one.",
    )
    clock: Literal["wall", "event"] = Field(
        default="wall",
        description="wall for live use: events are scored as they are processed and "
        "silence is measured on the wall clock. event to let the events' occurred_at drive "
        "time, for replaying history.",
    )
    app_id: str = Field(
        default="engagement-scorer",
        description="The workers' Kafka consumer group. Workers with the same value share "
        "the partitions; a new value is a new group, which reads the input topics from the "
        "beginning.",
    )

    topic_clickstream: str = Field(
        default="engagement.clickstream",
        description="Input topic of clickstream events (views, clicks, errors: any type).",
    )
    topic_purchases: str = Field(
        default="engagement.purchases",
        description="Input topic of purchase events (order, return, refund, cancellation).",
    )
    topic_feedback: str = Field(
        default="engagement.feedback",
        description="Input topic of feedback events (nps, csat, review, support_ticket, survey).",
    )
    topic_rerouted: str = Field(
        default="engagement.rerouted",
        description="Internal topic that carries a record read on a partition other than "
        "its customer's shard to the worker owning that shard. It must have "
        "ENGAGEMENT_PARTITIONS partitions.",
    )
    topic_churn_risk: str = Field(
        default="engagement.churn-risk",
        description="Output topic of churn-risk alerts (levels elevated and high).",
    )
    topic_interventions: str = Field(
        default="engagement.interventions",
        description="Output topic of intervention alerts (a bad experience, a detractor, "
        "a return, ...).",
    )
    topic_deadletter: str = Field(
        default="engagement.deadletter",
        description="Output topic for records that cannot be scored, published unchanged "
        "with headers naming the error and where the record came from.",
    )
    # A customer's shard is murmur2(customer_id) % partitions: changing it moves customers
    # away from their stored state.
    partitions: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Partitions of the topics the worker creates, which is also the number "
        "of state shards and so the most workers that can share the load. Fixed once topics "
        "and state exist: choose it for the largest number of workers you expect.",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replication factor of the topics the worker creates (existing topics "
        "are left as they are). 3 is usual on a production cluster; one broker needs 1.",
    )

    # Tansu (the embedded broker) has no InitProducerId, so idempotence is a setting.
    producer_idempotence: bool = Field(
        default=False,
        description="true to publish with Kafka's idempotent producer. Turn it on for Apache "
        "Kafka; the embedded broker does not support it.",
    )
    session_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a worker may go unheard before the consumer group hands its "
        "partitions to the other workers. Lower notices a dead worker sooner.",
    )
    batch_max_events: int = Field(
        default=1000,
        ge=1,
        description="The most events scored together in one batch.",
    )
    batch_within_s: float = Field(
        default=0.005,
        gt=0,
        description="The longest a batch waits to fill, in seconds. It adds to every alert's "
        "latency when input is light; under load batches fill long before it (BENCHMARKS.md "
        "measures it).",
    )
    # Tansu looks for records at the start of the wait, halfway, at three quarters and so on;
    # with Faust's own fixed 1500 ms a record could wait 750 ms there.
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=60_000,
        description="The longest a fetch waits at the broker for records, in milliseconds. "
        "Apache Kafka answers as soon as records arrive; on the embedded broker a record "
        "can wait up to half of this.",
    )
    fetch_min_bytes: int = Field(
        default=1,
        ge=1,
        description="How many bytes a fetch gathers (within ENGAGEMENT_FETCH_MAX_WAIT_MS) "
        "before the broker answers; 1 answers at the first record. More means fewer, larger "
        "fetches and less CPU when input is light, for more latency (BENCHMARKS.md measures "
        "it).",
    )
    # streams/kafka/fetching.py
    fetch_sessions: bool = Field(
        default=True,
        description="true to fetch in incremental sessions (Kafka's KIP-227): each fetch and "
        "its reply carry only the partitions with something new. A broker that grants no "
        "session (the embedded one) is fetched in full either way.",
    )
    fetch_gather_ms: int = Field(
        default=10,
        ge=0,
        le=60_000,
        description="While fetches keep returning records, each gathers for up to this many "
        "milliseconds: fewer, larger fetches and less CPU when input is light (BENCHMARKS.md "
        "measures it). 0 never gathers; after an empty fetch the next one waits for the first "
        "record, so an idle worker fetches rarely.",
    )
    # uvloop runs the loop's own work, a large part of the worker's time, in less CPU
    # (BENCHMARKS.md).
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="The worker's event loop: uvloop (faster) or asyncio (Python's own, for "
        "debugging).",
    )
    sweep_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between inactivity sweeps, which find customers who went "
        "silent and raise their churn-risk alerts.",
    )
    sweep_batch: int = Field(
        default=2000,
        ge=1,
        description="How many due customers a sweep reads from Redis at a time; it goes on "
        "until none is left.",
    )
    outbox_relay_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between checks for alerts committed but never sent (by a "
        "worker that died, say); such an alert is published within about two of these.",
    )
    redis_retry_max_s: float = Field(
        default=5.0,
        gt=0,
        description="The longest wait between retries, in seconds, while Redis is "
        "unreachable; the waits double up to it.",
    )
    redis_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds to wait for a Redis reply; a Redis that does not answer in time "
        "is treated as down and retried.",
    )
    max_held_events: int = Field(
        default=200_000,
        ge=1,
        description="With ENGAGEMENT_CLOCK=event: how many read events may wait for slower "
        "partitions before the oldest are applied anyway. It bounds memory at the cost of "
        "strict event-time order.",
    )
    max_unsent_alerts: int = Field(
        default=10_000,
        ge=1,
        description="Alerts committed but not yet acknowledged by Kafka beyond which "
        "scoring waits. The alerts are safe in Redis meanwhile; this bounds a worker's memory "
        "while the broker is down or slow.",
    )
    ingest: Literal["batches", "agent"] = Field(
        default="batches",
        description="How records reach the scorer: batches hands over each fetched batch in "
        "one call; agent is Faust's own per-message path, several times slower. With other "
        "releases of faust-streaming or aiokafka than the pinned ones the worker refuses to "
        "start; agent lets it start when only the batch path's methods differ.",
    )

    scoring_config: Path | None = Field(
        default=None,
        description="A scoring TOML file: weights, half-lives, thresholds (docs/SCORING.md). "
        'Unset: the shipped retail profile; profile = "gaming" or "subscription" in the file '
        "starts from another shipped one.",
    )
    model_params: Path | None = Field(
        default=None,
        description="BG/NBD and Gamma-Gamma parameters written by engagement model fit "
        "(JSON). Unset: churn risk has no p_alive term and lifetime value uses its simple "
        "form.",
    )
    state_dir: Path = Field(
        default=Path(".engagement"),
        description="Where the worker keeps local files (Faust's data directory). Give each "
        "worker on a host its own.",
    )
    web_port: int = Field(
        default=6066,
        ge=0,
        le=65535,
        description="Port of the worker's /healthz, /metrics and /kpis. Each worker on a "
        "host needs its own.",
    )
    web_host: str = Field(
        default="127.0.0.1",
        description="Address /healthz, /metrics and /kpis listen on: 127.0.0.1 for this "
        "host only, 0.0.0.0 for every interface (in a container).",
    )

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

    @property
    def consumed_topics(self) -> frozenset[str]:
        """What a worker reads: the input topics and the rerouted topic. A shard is the
        same partition of each."""
        return frozenset((*self.input_topics, self.topic_rerouted))


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
