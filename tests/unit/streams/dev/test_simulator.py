"""The simulator, without a broker: generated events, encoding, topics and publishing."""

from __future__ import annotations

import tomllib
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from schemas.events import ClickstreamEvent, FeedbackEvent, PurchaseEvent
from streams.dev.simulator import PERSONAS, SimEvent, encode, generate, summary, topic_for
from streams.settings import Settings

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 60.0
MODELS: dict[str, type[BaseModel]] = {
    "clickstream": ClickstreamEvent,
    "purchases": PurchaseEvent,
    "feedback": FeedbackEvent,
}
CONFIG = Path(__file__).parents[4] / "scoring" / "default.toml"
BAD_TYPES = set(tomllib.loads(CONFIG.read_text())["bad_experiences"])


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    return generate(300, DAYS, 1, START)


def by_customer(events: list[SimEvent], persona: str) -> dict[str, list[SimEvent]]:
    out: dict[str, list[SimEvent]] = defaultdict(list)
    for e in events:
        if e.persona == persona:
            out[e.customer_id].append(e)
    return out


def at_fraction(fraction: float) -> datetime:
    return START + timedelta(days=DAYS * fraction)


def test_every_payload_validates_against_its_schema(events: list[SimEvent]) -> None:
    for e in events:
        model: Any = MODELS[e.source].model_validate_json(encode(e))
        assert model.customer_id == e.customer_id
        assert model.event_id == e.payload["event_id"]
        assert model.occurred_at == e.occurred_at
        assert model.occurred_at.utcoffset() is not None


def test_payload_fields(events: list[SimEvent]) -> None:
    for e in events[:500]:
        stamp = e.payload["occurred_at"]
        assert isinstance(stamp, str) and stamp.endswith("+00:00")
        assert datetime.fromisoformat(stamp) == e.occurred_at
        assert orjson.loads(encode(e)) == e.payload
    orders = [e for e in events if e.payload["type"] == "order"]
    assert orders
    for e in orders:
        items: Any = e.payload["items"]
        assert 1 <= len(items) <= 3 and e.payload["currency"] == "EUR"
        total = sum(float(i["unit_price"]) * i["quantity"] for i in items)
        assert float(str(e.payload["amount"])) == pytest.approx(total)


def test_returns_match_an_earlier_order(events: list[SimEvent]) -> None:
    orders: dict[object, SimEvent] = {}
    returns = 0
    for e in events:
        if e.payload["type"] == "order":
            orders[e.payload["order_id"]] = e
        elif e.payload["type"] == "return":
            returns += 1
            order = orders[e.payload["order_id"]]
            assert order.customer_id == e.customer_id
            assert order.payload["amount"] == e.payload["amount"]
    assert returns > 0


def test_sessions_and_campaigns(events: list[SimEvent]) -> None:
    sessions = Counter(e.payload["session_id"] for e in events if e.source == "clickstream")
    assert min(sessions.values()) >= 1 and max(sessions.values()) <= 8
    bounces = sum(1 for n in sessions.values() if n == 1)
    assert 0.03 < bounces / len(sessions) < 0.2
    types = Counter(str(e.payload["type"]) for e in events)
    assert types["email_click"] and types["ad_click"] and types["wishlist_add"]
    assert types["share"] and types["referral"]
    # every order names a session of its customer that had already started
    started = {e.payload["session_id"]: e for e in events if e.source == "clickstream"}
    for e in events:
        if e.payload["type"] == "order":
            first = started[e.payload["session_id"]]
            assert first.customer_id == e.customer_id
    campaigns = [e for e in events if e.payload["type"] in ("email_click", "ad_click")]
    assert all(e.payload.get("campaign_id") for e in campaigns)


def test_support_tickets_are_opened_then_resolved_with_their_times(
    events: list[SimEvent],
) -> None:
    tickets = [e for e in events if e.payload["type"] == "support_ticket"]
    opened = [e for e in tickets if e.payload["status"] == "opened"]
    resolved = [e for e in tickets if e.payload["status"] == "resolved"]
    assert opened and resolved and len(resolved) <= len(opened)
    for e in resolved:
        response, resolution = e.payload["first_response_s"], e.payload["resolution_s"]
        assert isinstance(response, int) and isinstance(resolution, int)
        assert 0 < response < resolution
        when = e.occurred_at - timedelta(seconds=resolution)
        assert any(o.customer_id == e.customer_id and o.occurred_at <= when for o in opened)


def test_deterministic_for_seed_and_start() -> None:
    first = generate(40, 30, 7, START)
    assert first == generate(40, 30, 7, START)
    assert first != generate(40, 30, 8, START)
    later = START + timedelta(days=1)
    assert [e.occurred_at - START for e in first] == [
        e.occurred_at - later for e in generate(40, 30, 7, later)
    ]


def test_sorted_and_unique_ids(events: list[SimEvent]) -> None:
    times = [e.occurred_at for e in events]
    assert times == sorted(times)
    ids = [e.payload["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert all(START <= t < at_fraction(1.0) for t in times)


def test_all_personas_present_in_roughly_their_shares(events: list[SimEvent]) -> None:
    counts = summary(events)
    for persona, share in PERSONAS.items():
        assert counts[f"customers:{persona}"] == pytest.approx(300 * share, abs=3)
        assert counts[f"persona:{persona}"] > 0


def test_fading_customers_are_silent_at_the_end(events: list[SimEvent]) -> None:
    fading = by_customer(events, "fading")
    assert fading
    for evs in fading.values():
        assert max(e.occurred_at for e in evs) < at_fraction(0.65)
    # ... after being active in the first part of the period.
    early = [c for c, evs in fading.items() if min(e.occurred_at for e in evs) < at_fraction(0.1)]
    assert len(early) > len(fading) * 0.8


def is_bad(e: SimEvent) -> bool:
    p = e.payload
    if e.source == "clickstream":
        return p["type"] in BAD_TYPES
    if e.source == "purchases":
        return p["type"] == "return"
    score, rating = p.get("score"), p.get("rating")
    return (
        (p["type"] == "nps" and isinstance(score, int) and score <= 6)
        or (p["type"] == "csat" and isinstance(score, int) and score <= 2)
        or (p["type"] == "review" and isinstance(rating, int) and rating <= 2)
    )


def test_bad_experience_customers_have_one(events: list[SimEvent]) -> None:
    bad = by_customer(events, "bad_experience")
    assert bad
    for evs in bad.values():
        assert any(e.payload["type"] in BAD_TYPES for e in evs)
        assert any(is_bad(e) and e.source == "feedback" for e in evs)
    # Some go silent after the incident, some keep coming back.
    last_seen = [max(e.occurred_at for e in evs) for evs in bad.values()]
    assert any(t < at_fraction(0.8) for t in last_seen)
    assert any(t > at_fraction(0.9) for t in last_seen)


def test_happy_customers_have_no_detractor_feedback(events: list[SimEvent]) -> None:
    for persona in ("loyal", "occasional", "new"):
        for evs in by_customer(events, persona).values():
            assert not any(is_bad(e) for e in evs if e.source == "feedback")


def test_new_customers_start_late(events: list[SimEvent]) -> None:
    new = by_customer(events, "new")
    assert new
    for evs in new.values():
        assert min(e.occurred_at for e in evs) > at_fraction(0.6)


def test_size_is_sane(events: list[SimEvent]) -> None:
    assert 5_000 <= len(events) <= 60_000
    counts = summary(events)
    assert counts["total"] == len(events)
    assert sum(counts[f"source:{s}"] for s in MODELS) == len(events)
    assert sum(counts[f"persona:{p}"] for p in PERSONAS) == len(events)
    per_day = counts["persona:loyal"] / (counts["customers:loyal"] * DAYS)
    assert 1 <= per_day <= 3


def test_start_must_be_aware() -> None:
    with pytest.raises(ValueError):
        generate(3, 5, 1, datetime(2026, 1, 1))
    other = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert all(str(e.payload["occurred_at"]).endswith("+02:00") for e in generate(5, 10, 1, other))


def test_topic_for() -> None:
    settings = Settings(topic_clickstream="c", topic_purchases="p", topic_feedback="f")
    evs = generate(30, 30, 3, START)
    assert {e.source: topic_for(e, settings) for e in evs} == {
        "clickstream": "c",
        "purchases": "p",
        "feedback": "f",
    }
