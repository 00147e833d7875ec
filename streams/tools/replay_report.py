"""What a replay reports: old and new alert counts by kind and level, as a table or JSON,
and the progress line written while it runs. Pure formatting, no I/O beyond the stream given."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import orjson

AlertKind = tuple[str, str]  # (kind, level): a churn alert's level, an intervention's severity
UNREADABLE: AlertKind = ("unreadable", "-")
# Churn levels and intervention severities, each in rising order; others sort last.
_LEVELS = ("low", "elevated", "medium", "high")


@dataclass(frozen=True, slots=True)
class Comparison:
    kind: str
    level: str
    old: int
    new: int

    @property
    def difference(self) -> int:
        return self.new - self.old


@dataclass(slots=True)
class ReplayResult:
    namespace: str
    emitted: bool
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    rerouted: int = 0
    seconds: float = 0.0
    old: Counter[AlertKind] = field(default_factory=Counter)
    new: Counter[AlertKind] = field(default_factory=Counter)


def alert_kind(value: bytes) -> tuple[str, AlertKind]:
    """The id and (kind, level) of an alert message as published."""
    alert = orjson.loads(value)
    return alert["alert_id"], (alert["kind"], alert.get("level") or alert["severity"])


def compare(old: Mapping[AlertKind, int], new: Mapping[AlertKind, int]) -> list[Comparison]:
    """One row per (kind, level) seen in either count, churn risk first."""

    def rank(key: AlertKind) -> tuple[bool, str, int, str]:
        kind, level = key
        order = _LEVELS.index(level) if level in _LEVELS else len(_LEVELS)
        return kind != "churn_risk", kind, order, level

    keys = sorted({*old, *new}, key=rank)
    return [Comparison(k, lv, old.get((k, lv), 0), new.get((k, lv), 0)) for k, lv in keys]


def format_table(rows: Sequence[Comparison]) -> str:
    """The comparison as aligned text, with a total line."""
    lines = [("alert", "old", "new", "difference")]
    for r in rows:
        lines.append((f"{r.kind}/{r.level}", str(r.old), str(r.new), f"{r.difference:+d}"))
    old, new = sum(r.old for r in rows), sum(r.new for r in rows)
    lines.append(("total", str(old), str(new), f"{new - old:+d}"))
    width = max(len(line[0]) for line in lines)
    return "\n".join(f"{a:<{width}}  {b:>8}  {c:>8}  {d:>10}".rstrip() for a, b, c, d in lines)


def comparison_json(result: ReplayResult) -> dict[str, Any]:
    rows = compare(result.old, result.new)
    old, new = sum(result.old.values()), sum(result.new.values())
    return {
        "namespace": result.namespace,
        "emitted": result.emitted,
        "events": {
            "read": result.events,
            "applied": result.applied,
            "duplicates": result.duplicates,
            "dead_letters": result.dead_letters,
            "rerouted": result.rerouted,
        },
        "seconds": round(result.seconds, 3),
        "alerts": [{**asdict(r), "difference": r.difference} for r in rows],
        "total": {"old": old, "new": new, "difference": new - old},
    }


class ProgressLine:
    """One line rewritten in place (``\\r``): events read / total and events per second.
    Off a terminal only the final line is written, so logs get one line, not thousands."""

    def __init__(self, total: int, stream: TextIO, interval_s: float = 0.25) -> None:
        self.total, self.stream, self.interval_s = total, stream, interval_s
        self.live = stream.isatty()
        self.started = self._shown = time.monotonic()

    def line(self, read: int, elapsed: float) -> str:
        rate = read / elapsed if elapsed > 0 else 0.0
        share = read / self.total if self.total else 1.0
        return f"replay {read}/{self.total} events ({share:.0%}), {rate:,.0f} events/s"

    def update(self, read: int, final: bool = False) -> None:
        now = time.monotonic()
        if final or (self.live and now - self._shown >= self.interval_s):
            self._shown = now
            start = "\r" if self.live else ""
            self.stream.write(start + self.line(read, now - self.started) + ("\n" if final else ""))
            self.stream.flush()
