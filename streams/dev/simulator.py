"""Synthetic customers for demos and replays: clickstream, purchases and feedback.

``generate`` is pure and deterministic (same arguments, same events); ``publish`` sends the
events to Kafka keyed by customer id. Personas and their share of the customers:

- loyal (35%): a session every 1-3 days, an order every 1-2 weeks, happy feedback;
- fading (25%): loyal at first, sessions get rarer from 30-50% of the period, silent by 60%;
- bad_experience (15%): normal, then errors, poor feedback and maybe a return; some go silent;
- occasional (20%): a session every 1-3 weeks, rare purchases;
- new (5%): first seen in the last third of the period, then loyal.

Sessions carry a session_id and one to eight hits (about one in eight is a single-page
bounce), with durations, campaign landings, shares and referrals; an order names the
session it was placed in. Incidents may open a support ticket, most of which are resolved
later with their first-response and resolution times; a few happy customers ask a
question that is answered quickly.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

import orjson
from aiokafka import AIOKafkaProducer

from streams.settings import Settings

Source = Literal["clickstream", "purchases", "feedback"]
PERSONAS = dict(loyal=0.35, fading=0.25, bad_experience=0.15, occasional=0.20, new=0.05)
BAD_TYPES = ("payment_error", "checkout_error", "error_page")
CATEGORIES = ("books", "electronics", "home", "fashion", "beauty", "toys", "sports", "grocery")
CAMPAIGNS = ("cmp-welcome", "cmp-spring-sale", "cmp-newsletter", "cmp-retarget", "cmp-vip")
# Clickstream types inside a session after its first event, with relative weights; the
# unknown ones (wishlist_add, video_play, ...) are there because the scorer takes any type.
BROWSE = (
    ("page_view", 3.0),
    ("product_view", 4.0),
    ("search", 1.5),
    ("add_to_cart", 0.8),
    ("wishlist_add", 0.3),
    ("video_play", 0.2),
    ("share", 0.1),
    ("referral", 0.04),
    ("search_no_results", 0.05),
)
BOUNCE_SHARE = 0.12
DAY = 86_400.0


@dataclass(frozen=True)
class SimEvent:
    source: Source
    customer_id: str
    occurred_at: datetime
    payload: dict[str, object]
    persona: str


@dataclass(frozen=True)
class _Product:
    product_id: str
    price: Decimal
    category: str


class _Customer:
    """Builds one customer's events; times are seconds since the period start."""

    def __init__(self, cid: str, persona: str, seed: int, catalog: list[_Product]) -> None:
        self.cid, self.persona, self.seed, self.catalog = cid, persona, seed, catalog
        self.rng = random.Random(f"{seed}:{cid}")
        # (source, seconds since the period start, event id, type-specific fields)
        self.events: list[tuple[Source, float, str, dict[str, object]]] = []
        self.orders: list[dict[str, object]] = []
        self.sessions = 0

    def emit(self, source: Source, t: float, type_: str, **fields: object) -> None:
        event_id = f"sim{self.seed}-{self.cid}-{len(self.events):05d}"
        self.events.append((source, t, event_id, {"type": type_, **fields}))

    def click(self, t: float, type_: str, **fields: object) -> None:
        self.emit("clickstream", t, type_, **fields)

    def feedback(self, t: float, type_: str, **fields: object) -> None:
        self.emit("feedback", t, type_, **fields)

    def session(self, t: float, order: bool = False, bad: bool = False) -> float:
        """Emit one session starting at ``t``; return the time of its last event."""
        rng = self.rng
        self.sessions += 1
        sid = f"s-{self.cid}-{self.sessions:04d}"
        if rng.random() < 0.2:
            kind = rng.choice(("email_click", "ad_click", "push_click"))
            campaign = rng.choice(CAMPAIGNS)
            self.click(t, kind, session_id=sid, page=f"/landing/{campaign}", campaign_id=campaign)
        else:
            ms = rng.randint(1_000, 60_000)
            self.click(t, "page_view", session_id=sid, page="/", duration_ms=ms)
        cart: list[_Product] = []
        types, weights = zip(*BROWSE, strict=True)
        # At most 8 events: the first, the browsing, then errors or an add_to_cart. Some
        # plain visits stop at the landing page (bounces).
        tail = rng.randint(1, 3) if bad else int(order)
        bounce = not bad and not order and rng.random() < BOUNCE_SHARE
        for _ in range(0 if bounce else rng.randint(1, 7 - tail)):
            t += rng.uniform(5, 240)
            kind = rng.choices(types, weights)[0]
            product = rng.choice(self.catalog)
            fields: dict[str, object] = {"session_id": sid}
            if kind in ("page_view", "video_play"):
                fields.update(page=f"/{product.category}", duration_ms=rng.randint(1_000, 90_000))
            elif kind == "search" or kind == "search_no_results":
                fields.update(page="/search", properties={"query": product.category})
            else:
                page = f"/p/{product.product_id}"
                fields.update(page=page, product_id=product.product_id)
                fields.update(duration_ms=rng.randint(2_000, 180_000))
                if kind == "add_to_cart":
                    cart.append(product)
            self.click(t, kind, **fields)
        if bad:
            for kind in rng.sample(BAD_TYPES, tail):
                t += rng.uniform(5, 120)
                page = "/checkout" if kind != "error_page" else "/error/500"
                self.click(t, kind, session_id=sid, page=page)
        elif order:
            if not cart:
                t += rng.uniform(5, 120)
                cart.append(rng.choice(self.catalog))
                pid = cart[0].product_id
                self.click(t, "add_to_cart", session_id=sid, product_id=pid, page=f"/p/{pid}")
            t += rng.uniform(30, 300)
            self.order(t, (cart + rng.sample(self.catalog, 3))[: rng.randint(1, 3)], sid)
        return t

    def order(self, t: float, products: list[_Product], session_id: str) -> None:
        items: list[dict[str, object]] = []
        amount = Decimal(0)
        for p in products:
            qty = self.rng.choice((1, 1, 1, 2, 3))
            amount += p.price * qty
            item = {"product_id": p.product_id, "quantity": qty, "unit_price": str(p.price)}
            items.append(item | {"category": p.category})
        fields: dict[str, object] = {
            "order_id": f"o-{self.seed}-{self.cid}-{len(self.orders) + 1:03d}",
            "amount": str(amount),
            "currency": "EUR",
            "items": items,
        }
        self.emit("purchases", t, "order", **fields, session_id=session_id)
        self.orders.append(fields)

    def happy_feedback(self, t: float) -> None:
        kind = self.rng.choice(("nps", "csat", "review"))
        if kind == "nps":
            self.feedback(t, "nps", score=self.rng.randint(9, 10))
        elif kind == "csat":
            self.feedback(t, "csat", score=self.rng.randint(4, 5))
        else:
            mood = round(self.rng.uniform(0.5, 1), 2)
            self.feedback(t, "review", rating=self.rng.randint(4, 5), text="Great!", sentiment=mood)

    def incident(self, t: float) -> float:
        """A bad experience at ``t``: errors, poor feedback, maybe a return or a ticket."""
        rng = self.rng
        t = self.session(t, bad=True)
        if self.orders and rng.random() < 0.5:
            t += rng.uniform(600, DAY)
            order = rng.choice(self.orders)
            fields = {k: order[k] for k in ("order_id", "amount", "currency", "items")}
            self.emit("purchases", t, "return", **fields)
        t += rng.uniform(600, DAY / 2)
        self.feedback(t, "nps", score=rng.randint(0, 6))
        if rng.random() < 0.5:
            t += rng.uniform(60, 3_600)
            self.feedback(t, "csat", score=rng.randint(1, 2))
        if rng.random() < 0.4:
            t += rng.uniform(60, 3_600)
            mood = round(rng.uniform(-1, -0.4), 2)
            self.feedback(t, "review", rating=rng.randint(1, 2), text="It failed.", sentiment=mood)
        if rng.random() < 0.3:
            t += rng.uniform(60, 3_600)
            self.ticket(t, "Payment failed", resolved=rng.random() < 0.7, slow=True)
        return t

    def ticket(self, t: float, text: str, resolved: bool, slow: bool) -> None:
        """A support ticket opened at ``t`` and, if ``resolved``, closed later with its
        first-response and resolution times (hours when ``slow``, minutes otherwise)."""
        rng = self.rng
        self.feedback(t, "support_ticket", status="opened", text=text)
        if resolved:
            scale = 3_600.0 if slow else 60.0
            response = round(rng.uniform(1, 30) * scale)
            resolution = response + round(rng.uniform(1, 48) * scale)
            self.feedback(
                t + resolution,
                "support_ticket",
                status="resolved",
                first_response_s=response,
                resolution_s=resolution,
            )

    def run(self, period: float) -> None:
        rng, persona = self.rng, self.persona
        begin, end, fade = 0.0, period, period
        if persona == "new":
            begin = rng.uniform(0.67, 0.9) * period
        elif persona == "fading":
            fade = rng.uniform(0.3, 0.5) * period
            end = rng.uniform(fade / period + 0.05, 0.6) * period
        gap_lo, gap_hi = (7.0, 21.0) if persona == "occasional" else (1.0, 3.0)
        never = float("inf")
        incident_at = rng.uniform(0.3, 0.7) * period if persona == "bad_experience" else never
        silent_after_incident = rng.random() < 0.5
        t = begin + rng.uniform(0, gap_hi * DAY)
        next_order = t + rng.uniform(0, 14) * DAY
        while t < end:
            t = (t // DAY) * DAY + rng.uniform(7, 22) * 3_600  # sessions in the daytime
            if t >= incident_at:
                last = self.incident(t)
                incident_at = never
                if silent_after_incident:
                    break
                next_order, gap_lo, gap_hi = last + rng.uniform(7, 21) * DAY, 2.0, 5.0
                t = last + rng.uniform(gap_lo, gap_hi) * DAY
                continue
            ordering = rng.random() < 0.15 if persona == "occasional" else t >= next_order
            last = self.session(t, order=ordering)
            if ordering:
                next_order = last + rng.uniform(7, 14) * DAY
                if rng.random() < 0.3:
                    self.happy_feedback(last + rng.uniform(DAY, 3 * DAY))
            elif rng.random() < 0.02 and persona != "occasional":
                self.happy_feedback(last + rng.uniform(3_600, DAY))
            elif rng.random() < 0.01:
                self.ticket(last + rng.uniform(60, 3_600), "Question", resolved=True, slow=False)
            gap = rng.uniform(gap_lo, gap_hi)
            if t > fade:  # fading: gaps grow with every session after the fade starts
                gap_lo, gap_hi = gap_lo * 1.5, gap_hi * 1.5
            t = last + gap * DAY
        # Nothing after the end of the customer's life (only fading ones end early).
        self.events = [e for e in self.events if e[1] < end]


def _persona_list(customers: int, rng: random.Random) -> list[str]:
    """Exact shares by largest remainder, shuffled, so every persona appears when possible."""
    quotas = {p: customers * share for p, share in PERSONAS.items()}
    counts = {p: int(q) for p, q in quotas.items()}
    by_remainder = sorted(PERSONAS, key=lambda p: counts[p] - quotas[p])
    for p in by_remainder[: customers - sum(counts.values())]:
        counts[p] += 1
    personas = [p for p in PERSONAS for _ in range(counts[p])]
    rng.shuffle(personas)
    return personas


def generate(customers: int, days: float, seed: int, start: datetime) -> list[SimEvent]:
    """Events of ``customers`` synthetic customers over ``days`` days from ``start``
    (an aware datetime), sorted by time, then customer, then event id."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    if customers < 0 or days <= 0:
        raise ValueError("customers must be >= 0 and days > 0")
    rng = random.Random(seed)
    catalog = [
        _Product(f"p{i:04d}", Decimal(rng.randint(199, 19_999)) / 100, rng.choice(CATEGORIES))
        for i in range(500)
    ]
    out: list[SimEvent] = []
    for i, persona in enumerate(_persona_list(customers, rng)):
        c = _Customer(f"c{i:06d}", persona, seed, catalog)
        c.run(days * DAY)
        for source, t, event_id, fields in c.events:
            at = start + timedelta(milliseconds=round(t * 1000))
            stamp = at.isoformat("T", "milliseconds")
            payload = {"event_id": event_id, "customer_id": c.cid, "occurred_at": stamp}
            out.append(SimEvent(source, c.cid, at, payload | fields, persona))
    out.sort(key=lambda e: (e.occurred_at, e.customer_id, str(e.payload["event_id"])))
    return out


def encode(event: SimEvent) -> bytes:
    return orjson.dumps(event.payload)


def topic_for(event: SimEvent, settings: Settings) -> str:
    return {
        "clickstream": settings.topic_clickstream,
        "purchases": settings.topic_purchases,
        "feedback": settings.topic_feedback,
    }[event.source]


def summary(events: Sequence[SimEvent]) -> dict[str, int]:
    """Event counts: ``total``, ``persona:<name>``, ``source:<name>``, and the number of
    customers per persona as ``customers:<name>``."""
    counts: Counter[str] = Counter(total=len(events))
    seen: dict[str, str] = {}
    for e in events:
        counts[f"persona:{e.persona}"] += 1
        counts[f"source:{e.source}"] += 1
        seen[e.customer_id] = e.persona
    counts.update(f"customers:{p}" for p in seen.values())
    return dict(sorted(counts.items()))


async def publish(
    events: Sequence[SimEvent],
    settings: Settings,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Send ``events`` in order, keyed by customer id, at most ``rate`` events per second;
    return once every event is acknowledged. ``on_progress`` gets the count delivered so far."""
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0")
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=settings.producer_idempotence,
        linger_ms=5,
    )
    # Deliveries are awaited chunk by chunk; when throttled, a chunk is ~1/20 s of events.
    chunk = 2_000 if rate is None else max(1, min(2_000, int(rate / 20)))
    loop = asyncio.get_running_loop()
    await producer.start()
    try:
        began = loop.time()
        delivered = 0
        for lo in range(0, len(events), chunk):
            batch = events[lo : lo + chunk]
            futures = [
                await producer.send(topic_for(e, settings), encode(e), key=e.customer_id.encode())
                for e in batch
            ]
            await asyncio.gather(*futures)
            delivered += len(batch)
            if on_progress is not None:
                on_progress(delivered)
            if rate is not None:
                ahead = began + delivered / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        return delivered
    finally:
        await producer.stop()
