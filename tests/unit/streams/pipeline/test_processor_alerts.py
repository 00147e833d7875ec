"""The scorer's alert bookkeeping per committed write: each alert's outbox value is the
JSON its model defines (model_dump_json), and the alerts metric counts every alert once,
whether it is moved per alert or per (kind, level)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from unittest.mock import MagicMock

import pytest
from prometheus_client import REGISTRY

from schemas.alerts import ChurnRiskAlert, Reason, Trigger
from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.config import load_config
from scoring.engine import Alert, apply_event
from streams.pipeline.intake import Decoder
from streams.pipeline.processor import AlertTopics, Scorer
from streams.state.store import ShardWrite

CONFIG = load_config()
T0 = datetime(2026, 3, 2, 10, 0, 0, 123_456, tzinfo=UTC)


def scorer() -> Scorer:
    return Scorer(
        MagicMock(),  # no store: nothing here reads or writes Redis
        Decoder("c", "p", "f"),
        {"c", "p", "f"},
        CONFIG,
        AlertTopics("churn", "interventions"),
        shards=8,
        clock="wall",
        wall=time.time,
    )


def intervention_alerts() -> list[Alert]:
    """Interventions of new customers, as the latency workload raises them, with event
    times in several offsets and with and without fractions of a second."""
    alerts: list[Alert] = []
    zones = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
    for i, zone in enumerate(zones):
        for when in (T0, T0.replace(microsecond=0)):
            at = when.astimezone(zone)
            events: list[InputEvent] = [
                FeedbackEvent(
                    event_id=f"n{i}", customer_id=f"c{i}", occurred_at=at, type="nps", score=1
                ),
                PurchaseEvent(
                    event_id=f"r{i}",
                    customer_id=f"c{i}",
                    occurred_at=at,
                    type="return",
                    order_id="o-1",
                    amount=Decimal("19.90"),
                    currency="EUR",
                ),
                ClickstreamEvent(
                    event_id=f"e{i}",
                    customer_id=f"c\u00e9{i}",
                    occurred_at=at,
                    type="checkout_error",
                    page="/checkout",
                ),
            ]
            for event in events:
                t = event.occurred_at.timestamp()
                alerts += apply_event(None, event, t, t + 0.000_5, CONFIG).alerts
    return alerts


def churn_alert() -> ChurnRiskAlert:
    return ChurnRiskAlert(
        alert_id="a1",
        customer_id="c1",
        level="high",
        churn_risk=0.7512345678901234,
        previous_churn_risk=1e-12,
        threshold=0.75,
        engagement_score=12.5,
        reasons=[Reason(factor="recency", detail="31 days since the last visit", contribution=0.4)],
        trigger=Trigger(source="inactivity", event_id=None),
        occurred_at=T0,
        emitted_at=T0.replace(microsecond=0),
        p_alive=None,
        tier="at_risk",
        clv=1e16,
    )


def test_an_outbox_value_is_the_alerts_model_dump_json() -> None:
    alerts = [*intervention_alerts(), churn_alert()]
    assert len(alerts) > 10
    s = scorer()
    for alert in alerts:
        topic, key, value = s._outbox_triple(alert)
        assert value == alert.model_dump_json().encode()
        assert key == alert.customer_id.encode()
        assert topic == ("churn" if isinstance(alert, ChurnRiskAlert) else "interventions")


def alerts_total(kind: str, level: str) -> float:
    return (
        REGISTRY.get_sample_value("engagement_alerts_total", {"kind": kind, "level": level}) or 0.0
    )


@pytest.mark.parametrize("repeat", [1, 3])
def test_the_alerts_metric_counts_each_alert_once(repeat: int) -> None:
    alerts = [*intervention_alerts(), churn_alert()] * repeat
    s = scorer()
    labels = {(a.kind, a.level if isinstance(a, ChurnRiskAlert) else a.severity) for a in alerts}
    before = {label: alerts_total(*label) for label in labels}
    write = ShardWrite(shard=3, expected_epoch="0")
    write.outbox = [s._outbox_triple(a) for a in alerts]
    ids = [f"1-{i}" for i in range(len(alerts))]
    entries = s._entries(3, ids, write, alerts)
    assert [(e.shard, e.entry_id, e.topic, e.key, e.value) for e in entries] == [
        (3, i, *triple) for i, triple in zip(ids, write.outbox, strict=True)
    ]
    for label in labels:
        expected = sum(
            1
            for a in alerts
            if (a.kind, a.level if isinstance(a, ChurnRiskAlert) else a.severity) == label
        )
        assert alerts_total(*label) - before[label] == expected
