"""Prometheus metrics: what operations teams watch."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "engagement_events_total",
    "Input records by outcome: applied, duplicate (same event_id), redelivered (offset "
    "already applied), rerouted (to the owner partition) or deadletter.",
    ["topic", "outcome"],
)
DEADLETTERS = Counter(
    "engagement_deadletter_total", "Inputs that could not be scored, by source topic.", ["topic"]
)
ALERTS = Counter(
    "engagement_alerts_total", "Alerts written to the outbox, by kind and level.", ["kind", "level"]
)
ALERTS_PUBLISHED = Counter(
    "engagement_alerts_published_total", "Alerts delivered to Kafka (incl. outbox re-sends).", []
)
BATCH_SECONDS = Histogram(
    "engagement_batch_seconds",
    "Time to score one batch: decode, read state, score, commit to Redis.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_EVENTS = Histogram(
    "engagement_batch_events", "Records per batch.", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000)
)
REDIS_RETRIES = Counter(
    "engagement_redis_retries_total", "Redis calls retried after a connection error.", []
)
COMMIT_CONFLICTS = Counter(
    "engagement_commit_conflicts_total",
    "Shard writes refused because the shard changed since it was read (then re-done).",
    [],
)
SWEPT = Counter(
    "engagement_sweep_customers_total", "Customers re-evaluated by the inactivity sweeper.", []
)
OUTBOX_RELAYED = Counter(
    "engagement_outbox_relayed_total",
    "Alerts published from the outbox by the relay (after a crash or a failed send).",
    [],
)
ALERTS_UNSENT = Gauge(
    "engagement_alerts_unsent",
    "Alerts committed to the outbox and not yet acknowledged by Kafka in this worker.",
)
ALERT_BACKPRESSURE = Counter(
    "engagement_alert_backpressure_total",
    "Times scoring waited because too many alerts were unsent (broker down or slow).",
    [],
)
INPUT_REREADS = Counter(
    "engagement_input_rereads_total",
    "Times an input partition was read again from a record the consumer had skipped "
    "(streams/kafka/continuity.py); a gap in offsets that does not exist costs one each.",
    [],
)
INGEST_PATH = Gauge(
    "engagement_ingest_path",
    "1 for the path input records are read through: batches (streams/kafka/batches.py) or agent "
    "(Faust's per-message path, ENGAGEMENT_INGEST=agent).",
    ["path"],
)
OWNED_SHARDS = Gauge("engagement_owned_shards", "State shards this worker owns now.")
WATERMARK = Gauge(
    "engagement_event_clock_seconds",
    "Event-clock watermark of a shard (event clock only).",
    ["shard"],
)
KPI = Gauge(
    "engagement_kpi",
    "Population KPI (nps, csat_pct, repurchase_rate, upsell_ratio, cli, avg_clv, "
    "conversion_rate, return_rate, bounce_rate, returning_visitor_rate, customers, "
    "customers_<tier>) all-time (window=all) or over the rolling window (window=<n>d, "
    "customer-level ones for the cohort first seen in it); NaN while undefined. Every "
    "worker exports the same population values.",
    ["kpi", "window"],
)
BUILD_INFO = Gauge(
    "engagement_build_info",
    "1, labelled with what this worker runs: the project's version, its scoring core "
    "(compiled by mypyc, or pure Python), the path input records are read through, and the "
    "Faust and aiokafka releases.",
    ["version", "scoring_core", "ingest", "faust_streaming", "aiokafka"],
)
