"""Input event models: what parses, and what is rejected with an error naming the field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schemas.events import ClickstreamEvent, FeedbackEvent, PurchaseEvent

AT = "2026-03-01T12:30:00+01:00"


def clickstream(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "c-1",
        "customer_id": "cust-1",
        "occurred_at": AT,
        "type": "page_view",
        "session_id": "s-1",
        "page": "/home",
        "duration_ms": 1200,
        **overrides,
    }


def purchase(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "p-1",
        "customer_id": "cust-1",
        "occurred_at": AT,
        "type": "order",
        "order_id": "o-1",
        "amount": "59.90",
        "currency": "EUR",
        "items": [{"product_id": "sku-1", "quantity": 2, "unit_price": "29.95"}],
        **overrides,
    }


def feedback(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "f-1",
        "customer_id": "cust-1",
        "occurred_at": AT,
        "type": "nps",
        "score": 9,
        **overrides,
    }


def test_valid_clickstream_parses() -> None:
    event = ClickstreamEvent.model_validate(clickstream())
    assert event.type == "page_view"
    assert event.occurred_at.utcoffset() is not None
    assert event.occurred_at.timestamp() == 1772364600.0


def test_valid_purchase_parses() -> None:
    event = PurchaseEvent.model_validate(purchase())
    assert event.amount == Decimal("59.90")
    assert event.items[0].quantity == 2
    for kind in ("order", "return", "refund", "cancellation"):
        assert PurchaseEvent.model_validate(purchase(type=kind)).type == kind


@pytest.mark.parametrize(
    "payload",
    [
        feedback(),
        feedback(score=0),
        feedback(type="csat", score=1),
        feedback(type="csat", score=5),
        feedback(type="review", score=None, rating=1, text="meh"),
        feedback(type="support_ticket", score=None, status="opened", first_response_s=30.0),
        feedback(type="survey", score=None, sentiment=-0.8),
    ],
)
def test_valid_feedback_parses(payload: dict[str, Any]) -> None:
    assert FeedbackEvent.model_validate(payload).type == payload["type"]


def test_unknown_clickstream_type_is_accepted() -> None:
    assert ClickstreamEvent.model_validate(clickstream(type="hologram_view")).type == (
        "hologram_view"
    )


@pytest.mark.parametrize(
    ("model", "payload"),
    [
        (ClickstreamEvent, clickstream(brand_new_field=1)),
        (PurchaseEvent, purchase(loyalty_tier="gold")),
        (FeedbackEvent, feedback(channel={"kind": "email"})),
    ],
)
def test_unknown_extra_fields_are_ignored(model: type[BaseModel], payload: dict[str, Any]) -> None:
    event = model.model_validate(payload)
    assert "brand_new_field" not in event.model_dump()
    assert not hasattr(event, "loyalty_tier")
    assert not hasattr(event, "channel")


def without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


@pytest.mark.parametrize(
    ("model", "payload", "field"),
    [
        (ClickstreamEvent, clickstream(occurred_at="2026-03-01T12:30:00"), "occurred_at"),
        (PurchaseEvent, purchase(occurred_at="2026-03-01T12:30:00"), "occurred_at"),
        (ClickstreamEvent, without(clickstream(), "customer_id"), "customer_id"),
        (FeedbackEvent, without(feedback(), "customer_id"), "customer_id"),
        (ClickstreamEvent, clickstream(customer_id=""), "customer_id"),
        (PurchaseEvent, purchase(amount="-0.01"), "amount"),
        (PurchaseEvent, purchase(amount="NaN"), "amount"),
        (PurchaseEvent, purchase(type="exchange"), "type"),
        (PurchaseEvent, purchase(currency="eur"), "currency"),
        (FeedbackEvent, feedback(score=None), "score"),
        (FeedbackEvent, without(feedback(), "score"), "score"),
        (FeedbackEvent, feedback(type="csat", score=7), "score"),
        (FeedbackEvent, feedback(type="review", score=None, rating=0), "rating"),
        (FeedbackEvent, feedback(type="review", score=None), "rating"),
        (FeedbackEvent, feedback(type="support_ticket", score=None), "status"),
    ],
)
def test_invalid_event_is_rejected_naming_the_field(
    model: type[BaseModel], payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    errors = caught.value.errors()
    # A field constraint names the field in its location; a cross-field rule (the
    # feedback type's required fields) names it in its message.
    assert any(field in e["loc"] or f"'{field}'" in e["msg"] for e in errors), errors
    assert field in str(caught.value)


def test_events_are_frozen() -> None:
    event = ClickstreamEvent.model_validate(clickstream())
    with pytest.raises(ValidationError):
        event.type = "other"  # type: ignore[misc]
