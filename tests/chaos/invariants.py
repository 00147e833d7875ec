"""What must hold after a scenario, read back the way an operator would: Redis states,
the alert topics, the dead-letter topic, the group's committed offsets."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from state_checks import differing_fields

from scoring.config import ScoringConfig
from scoring.engine import Alert
from scoring.state import CustomerState

TP = tuple[str, int]


@dataclass
class Findings:
    customers: int = 0
    mismatched: list[str] = field(default_factory=list)
    lost: int = 0
    double_counted: int = 0
    alerts_expected: int = 0
    alerts_received: int = 0
    alerts_missing: list[str] = field(default_factory=list)
    alerts_unexpected: list[str] = field(default_factory=list)
    alerts_wrong: list[str] = field(default_factory=list)
    duplicate_alerts: int = 0
    poison_expected: int = 0
    poison_missing: list[str] = field(default_factory=list)
    poison_without_reason: list[str] = field(default_factory=list)
    valid_dead_lettered: list[str] = field(default_factory=list)
    offset_violations: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        problems = {
            "customer states differing from the truth": self.mismatched,
            "alerts of the truth missing": self.alerts_missing,
            "alerts not in the truth": self.alerts_unexpected,
            "alerts whose content differs from the truth": self.alerts_wrong,
            "malformed messages not dead-lettered": self.poison_missing,
            "dead letters without a reason": self.poison_without_reason,
            "valid events dead-lettered": self.valid_dead_lettered,
            "committed offsets ahead of applied state": self.offset_violations,
        }
        out = [f"{len(v)} {what}, e.g. {v[:3]}" for what, v in problems.items() if v]
        if self.lost or self.double_counted:
            out.append(f"events lost: {self.lost}, double-counted: {self.double_counted}")
        return out


def check_states(
    findings: Findings,
    got: Mapping[str, CustomerState],
    truth: Mapping[str, CustomerState],
    config: ScoringConfig,
) -> None:
    findings.customers = len(truth)
    for customer, want in truth.items():
        state = got.get(customer)
        have = state.count("events") if state is not None else 0
        findings.lost += max(0, want.count("events") - have)
        findings.double_counted += max(0, have - want.count("events"))
        if state is None:
            findings.mismatched.append(f"{customer}: no state")
        elif fields := differing_fields(state, want, config):
            findings.mismatched.append(f"{customer}: {','.join(fields)}")
    findings.mismatched += [f"{c}: not in the truth" for c in got.keys() - truth.keys()]


def _alert_identity(alert: Mapping[str, Any]) -> tuple[Any, ...]:
    return (alert["customer_id"], alert["kind"], alert.get("level"), alert.get("severity"))


def check_alerts(
    findings: Findings, records: Sequence[ConsumerRecord[bytes, bytes]], truth: Mapping[str, Alert]
) -> None:
    received: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        alert = orjson.loads(r.value)
        received[alert["alert_id"]].append(alert)
    findings.alerts_expected = len(truth)
    findings.alerts_received = len(records)
    findings.alerts_missing = sorted(truth.keys() - received.keys())
    findings.alerts_unexpected = sorted(received.keys() - truth.keys())
    for alert_id, copies in received.items():
        findings.duplicate_alerts += len(copies) - 1
        want = truth.get(alert_id)
        if want is None:
            continue
        expected = _alert_identity(orjson.loads(want.model_dump_json()))
        if any(_alert_identity(c) != expected for c in copies):
            findings.alerts_wrong.append(alert_id)


def check_dead_letters(
    findings: Findings, records: Sequence[ConsumerRecord[bytes, bytes]], poison: Sequence[bytes]
) -> None:
    findings.poison_expected = len(poison)
    seen: set[bytes] = set()
    for r in records:
        key = r.key or b""
        headers = dict(r.headers or ())
        if not key.startswith(b"poison-"):
            findings.valid_dead_lettered.append(key.decode(errors="replace"))
            continue
        seen.add(key)
        if not headers.get("error"):
            findings.poison_without_reason.append(key.decode())
    findings.poison_missing = sorted(k.decode() for k in set(poison) - seen)


def offsets_ahead(
    committed: Mapping[TP, int | None], frontier: Mapping[TP, int], poison_at: Mapping[TP, set[int]]
) -> list[str]:
    """Partitions whose committed offset is past what Redis applied or recorded done,
    except by dead letters (delivered before the commit, recorded in Redis just after)."""
    ahead = []
    for tp, offset in committed.items():
        if offset is None:
            continue
        done = frontier.get(tp, -1)
        unexplained = [o for o in range(done + 1, offset) if o not in poison_at.get(tp, set())]
        if unexplained:
            ahead.append(f"{tp[0]}:{tp[1]} committed {offset}, applied/done {done}")
    return ahead


async def read_topics(
    bootstrap: str, topics: Sequence[str], partitions: int, timeout_s: float = 120
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of the topics (each with ``partitions`` partitions), from the
    beginning to their current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topics}")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()
