"""Messages the scorer consumes: one model per input topic.

Every event carries ``event_id``, ``customer_id``, ``occurred_at`` (RFC 3339 with an
offset: a naive timestamp is rejected, since nobody can tell which instant it names) and
``type``. Unknown extra fields are ignored so producers can add fields without breaking
the scorer.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: NonEmpty
    customer_id: NonEmpty
    occurred_at: AwareDatetime
    type: NonEmpty


class ClickstreamEvent(_Event):
    """Any interaction on a site, app or campaign; ``type`` is free-form."""

    session_id: str | None = None
    page: str | None = None
    product_id: str | None = None
    duration_ms: Annotated[int, Field(ge=0)] | None = None
    campaign_id: str | None = None
    properties: dict[str, Any] | None = None


class PurchaseItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    product_id: NonEmpty
    quantity: Annotated[int, Field(ge=0)] = 1
    unit_price: Annotated[Decimal, Field(ge=0)] = Decimal(0)
    category: str | None = None


class PurchaseEvent(_Event):
    type: Literal["order", "return", "refund", "cancellation"]
    order_id: NonEmpty
    amount: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    items: list[PurchaseItem] = Field(default_factory=list)
    # The session the order was placed in, when the shop knows it (conversion rate).
    session_id: str | None = None


class FeedbackEvent(_Event):
    type: Literal["nps", "csat", "review", "support_ticket", "survey"]
    score: Annotated[int, Field(ge=0, le=10)] | None = None
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    status: Literal["opened", "resolved"] | None = None
    first_response_s: Annotated[float, Field(ge=0)] | None = None
    resolution_s: Annotated[float, Field(ge=0)] | None = None
    text: str | None = None
    sentiment: Annotated[float, Field(ge=-1, le=1)] | None = None

    @model_validator(mode="after")
    def _fields_required_by_type(self) -> FeedbackEvent:
        if self.type == "nps" and self.score is None:
            raise ValueError("nps feedback needs 'score' (0-10)")
        if self.type == "csat" and (self.score is None or not 1 <= self.score <= 5):
            raise ValueError("csat feedback needs 'score' between 1 and 5")
        if self.type == "review" and self.rating is None:
            raise ValueError("review feedback needs 'rating' (1-5)")
        if self.type == "support_ticket" and self.status is None:
            raise ValueError("support_ticket feedback needs 'status' (opened|resolved)")
        return self


InputEvent = ClickstreamEvent | PurchaseEvent | FeedbackEvent
