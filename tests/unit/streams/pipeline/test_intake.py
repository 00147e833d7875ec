from __future__ import annotations

import orjson
import pytest

from schemas.events import ClickstreamEvent, FeedbackEvent, PurchaseEvent
from streams.pipeline.intake import SOURCE_TOPIC_HEADER, Decoder, Record, RejectedRecord

DECODER = Decoder("clicks", "purchases", "feedback", rerouted="rerouted")


def record(topic: str, value: bytes | None, headers: dict[str, bytes] | None = None) -> Record:
    return Record(topic, 0, 7, b"c1", value, headers or {})


def body(**fields: object) -> bytes:
    base = {"event_id": "e1", "customer_id": "c1", "occurred_at": "2026-01-01T00:00:00Z"}
    return orjson.dumps({**base, **fields})


def test_each_topic_decodes_to_its_model() -> None:
    assert isinstance(DECODER.decode(record("clicks", body(type="x"))), ClickstreamEvent)
    order = body(type="order", order_id="o", amount="1.5", currency="EUR")
    assert isinstance(DECODER.decode(record("purchases", order)), PurchaseEvent)
    assert isinstance(DECODER.decode(record("feedback", body(type="nps", score=9))), FeedbackEvent)


def test_a_rerouted_record_decodes_as_its_source_topic() -> None:
    r = record("rerouted", body(type="nps", score=3), {SOURCE_TOPIC_HEADER: b"feedback"})
    assert isinstance(DECODER.decode(r), FeedbackEvent)
    with pytest.raises(RejectedRecord, match=SOURCE_TOPIC_HEADER):
        DECODER.decode(record("rerouted", body(type="nps", score=3)))


@pytest.mark.parametrize(
    ("topic", "value", "names"),
    [
        ("clicks", b"{not json", "Invalid JSON"),
        ("clicks", None, "tombstone"),
        ("clicks", body(type="x", occurred_at="2026-01-01T00:00:00"), "occurred_at"),
        ("clicks", orjson.dumps({"event_id": "e", "type": "x"}), "customer_id"),
        ("purchases", body(type="order", order_id="o", amount="-1", currency="EUR"), "amount"),
        ("purchases", body(type="gift", order_id="o", amount="1", currency="EUR"), "type"),
        ("feedback", body(type="csat", score=9), "csat"),
        ("elsewhere", body(type="x"), "elsewhere"),
    ],
)
def test_unscorable_records_are_rejected_naming_the_problem(
    topic: str, value: bytes | None, names: str
) -> None:
    with pytest.raises(RejectedRecord, match=names):
        DECODER.decode(record(topic, value))
