"""The generated parts of docs/SCORING.md: the retail profile's weights and the worked
example, one customer's events and every score they lead to.

``python -m scoring.example`` prints both blocks; a unit test checks that the document
carries exactly what this code computes, so the document cannot drift from the code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from schemas.events import ClickstreamEvent, FeedbackEvent, InputEvent, PurchaseEvent
from scoring.config import SUBSCORES, ScoringConfig, load_profile
from scoring.engagement import UNSATURATED
from scoring.engine import apply_event
from scoring.model import BgNbdParams, GammaGammaParams, ModelParams
from scoring.scores import churn_risk, engagement, momentum
from scoring.state import DAY_S, CustomerState
from scoring.value import customer_clv, loyalty, tier_of

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
AS_OF = START + timedelta(days=40)
# Illustrative parameters (the CDNOW fit of Fader, Hardie and Lee, 2005, in weeks).
EXAMPLE_MODEL = ModelParams(
    bgnbd=BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426),
    gamma_gamma=GammaGammaParams(p=6.25, q=3.74, gamma=15.44),
)


def example_config() -> ScoringConfig:
    return load_profile("retail").with_model(EXAMPLE_MODEL)


def example_events() -> list[InputEvent]:
    c = "c-example"
    events: list[InputEvent] = []

    def at(days: float, minutes: float = 0.0) -> datetime:
        return START + timedelta(days=days, minutes=minutes)

    def click(days: float, minutes: float, kind: str, session: str, **extra: object) -> None:
        events.append(
            ClickstreamEvent.model_validate(
                {
                    "event_id": f"x{len(events)}",
                    "customer_id": c,
                    "occurred_at": at(days, minutes),
                    "type": kind,
                    "session_id": session,
                    **extra,
                }
            )
        )

    def order(days: float, minutes: float, amount: str, products: list[str], session: str) -> None:
        events.append(
            PurchaseEvent(
                event_id=f"x{len(events)}",
                customer_id=c,
                occurred_at=at(days, minutes),
                type="order",
                order_id=f"o{len(events)}",
                amount=Decimal(amount),
                currency="EUR",
                items=[{"product_id": p, "category": "books"} for p in products],
                session_id=session,
            )
        )

    click(0, 0, "email_click", "s1", campaign_id="cmp-spring", page="/landing")
    click(0, 2, "product_view", "s1", product_id="p1", duration_ms=90_000)
    click(0, 5, "add_to_cart", "s1", product_id="p1")
    order(0, 8, "45.00", ["p1"], "s1")
    click(6, 0, "page_view", "s2", page="/", duration_ms=20_000)  # a bounce
    click(12, 0, "product_view", "s3", product_id="p2", duration_ms=120_000)
    click(12, 3, "product_view", "s3", product_id="p3", duration_ms=60_000)
    click(12, 6, "payment_error", "s3", page="/checkout")
    order(12, 10, "80.00", ["p2", "p3"], "s3")
    events.append(
        FeedbackEvent(
            event_id=f"x{len(events)}",
            customer_id=c,
            occurred_at=at(13),
            type="nps",
            score=9,
            sentiment=0.6,
        )
    )
    click(20, 0, "share", "s4", product_id="p3")
    click(20, 1, "product_view", "s4", product_id="p4", duration_ms=45_000)
    return events


def example_state() -> tuple[CustomerState, ScoringConfig]:
    config = example_config()
    state: CustomerState | None = None
    for event in example_events():
        t = event.occurred_at.timestamp()
        state = apply_event(state, event, t, t, config).state
    assert state is not None
    return state, config


def _row(factor: str, detail: str, contribution: float) -> str:
    return f"| {factor} | {detail} | {contribution:+.4f} |"


def worked_example() -> str:
    state, config = example_state()
    at = AS_OF.timestamp()
    silent = (at - state.last_seen) / DAY_S
    lines = [
        f"Customer `{state.customer_id}`, {len(example_events())} events from "
        f"{START:%Y-%m-%d}, scored on {AS_OF:%Y-%m-%d} ({silent:.1f} days after the last "
        "one), retail profile, with the illustrative BG/NBD and Gamma-Gamma parameters "
        "of `scoring/example.py`.",
        "",
        f"Counts: {', '.join(f'{k} {v}' for k, v in sorted(state.counts.items()))}; "
        f"purchase days {state.purchase_days}, spend {state.spend:.2f}.",
        "",
    ]
    eng = engagement(state, at, config)
    lines += [
        f"**engagement_score = {eng.score:.4f}**; sub-scores: "
        + ", ".join(f"{k} {eng.subscores[k]:.2f}" for k in SUBSCORES),
        "",
        "| feature | detail | contribution |",
        "| --- | --- | --- |",
        *(_row(f, f"{sub}: {d}", c) for f, sub, d, c in eng.contributions if c != 0.0),
        "",
    ]
    mom = momentum(state, at, config)
    churn = churn_risk(state, at, config)
    lines += [
        f"**momentum = {mom:+.4f}**",
        "",
        f"**churn_risk = {churn.churn_risk:.4f}** (recency term {churn.recency:.4f}, "
        f"p_alive {churn.p_alive:.4f}, falling momentum {churn.falling_momentum:.4f}, "
        f"bad experiences {churn.bad_experiences:.4f})",
        "",
        "| factor | detail | contribution |",
        "| --- | --- | --- |",
        *(_row(r.factor, r.detail, r.contribution) for r in churn.reasons),
        "",
    ]
    loyal = loyalty(state, config)
    clv, reason = customer_clv(state, at, config)
    lines += [
        f"**loyalty = {loyal.index:.4f}**",
        "",
        "| factor | detail | contribution |",
        "| --- | --- | --- |",
        *(_row(r.factor, r.detail, r.contribution) for r in loyal.reasons),
        "",
        f"**tier = {tier_of(state, at, config)}**; **clv = {clv:.2f}** ({reason.detail})",
    ]
    return "\n".join(lines)


def weights_table(profile: str = "retail") -> str:
    e = load_profile(profile).engagement
    total = sum(e.subscores.values())
    lines = [
        "| sub-score | weight | feature | weight in sub-score | saturation |",
        "| --- " * 5 + "|",
    ]
    for sub in SUBSCORES:
        members = [(n, f) for n, f in e.features.items() if f.subscore == sub]
        for i, (name, f) in enumerate(members):
            share = f"{e.subscores.get(sub, 0.0) / total:.2f}" if i == 0 else ""
            saturation = "-" if name in UNSATURATED else f"{f.saturation:g}"
            lines.append(
                f"| {sub if i == 0 else ''} | {share} | {name} | {f.weight:g} | {saturation} |"
            )
    return "\n".join(lines)


def main() -> None:
    print("<!-- retail-weights:begin -->")
    print(weights_table())
    print("<!-- retail-weights:end -->\n")
    print("<!-- worked-example:begin -->")
    print(worked_example())
    print("<!-- worked-example:end -->")


if __name__ == "__main__":
    main()
