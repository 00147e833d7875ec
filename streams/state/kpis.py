"""Population KPIs kept incrementally in Redis, all-time and over a rolling window.

Writing. Every state change the scorer commits (an event, or the sweeper's evaluation of a
silent customer) adds ``scoring.kpis`` deltas to its shard's KPI hash,
``{ns}:{s<s>}:kpi``, *inside* the commit script that writes the state: a batch counts
exactly once, whatever is redelivered or retried (a refused or lost commit is re-done from
a fresh read, and a redelivered record is skipped before it is scored). Fields:

    a:<counter>         all-time sum
    d:<day>:<counter>   the part of the sum that falls on <day> (days since 1970-01-01 UTC)
    lo                  oldest day kept (older day fields are deleted, and not written)

What falls on a day, and so what a window of N days (today and the N - 1 days before, by
the scorer's clock) means:

- event counters (NPS and CSAT answers, sessions, bounces, conversions, orders, returns)
  count on the day of the scorer clock when the event was scored (on the event clock: the
  event's own time). Windowed NPS is the NPS of the answers given in the window, windowed
  conversion rate that of the sessions in the window, and so on.
- customer-level counters (customers, buyers, repurchasers, single/multi product,
  visitors, returning visitors, tiers, CLV) count on the day of the customer's first event:
  in a window they describe the *cohort of customers first seen in the window, as they are
  now*. Windowed repurchase rate = customers first seen in the window who have ordered more
  than once / customers first seen in the window x 100; windowed customers_loyal = the
  customers first seen in the window who are in the loyal tier now. These stay within the
  bounds of their all-time versions (a rate never exceeds 100).

Day fields older than ``RETENTION_DAYS`` before the newest day a shard has committed are
deleted by the commit script, so a window can be at most ``RETENTION_DAYS`` long.

Reading sums the fields of every shard (one pipelined round trip); ``read_kpis`` returns
the KPIs of both views.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.exceptions

from scoring.kpis import EVENT_COUNTERS, customer_flags, diff, flag_changes, kpis
from scoring.state import DAY_S, CustomerState
from streams import metrics
from streams.state.store import ShardKeys, ShardWrite

log = logging.getLogger(__name__)

RETENTION_DAYS = 90
DEFAULT_WINDOW_DAYS = 30
GAUGE_REFRESH_S = 15.0
ALL_TIME = "a:"


def day_of(t: float) -> int:
    """Days since 1970-01-01 UTC of a time in epoch seconds."""
    return math.floor(t / DAY_S)


def day_field(day: int, counter: str) -> str:
    return f"d:{day}:{counter}"


@dataclass(slots=True)
class KpiDelta:
    """What one shard write adds to the shard's KPI hash fields."""

    # Counter -> delta, all-time and per day: the field names (``a:<counter>``,
    # ``d:<day>:<counter>``) are made once per write, in ``apply_to``, not per customer.
    all_time: dict[str, float] = field(default_factory=dict)
    by_day: dict[int, dict[str, float]] = field(default_factory=dict)
    # The newest scorer-clock day of the write: day fields older than it by the retention
    # are pruned by the commit.
    latest_day: int | None = None
    # Per customer, the events of the write not yet added up, as one run of consecutive
    # events on one day: (day, state before the run, state after it). A run's counters
    # are ``after - before``: the sum of its events' own differences, computed once.
    _runs: dict[str, tuple[int, CustomerState | None, CustomerState]] = field(default_factory=dict)

    def _add(self, deltas: Mapping[str, float], day: int) -> None:
        all_time = self.all_time
        on_day = self.by_day.get(day)
        if on_day is None:
            on_day = self.by_day[day] = {}
        for counter, delta in deltas.items():
            all_time[counter] = all_time.get(counter, 0.0) + delta
            on_day[counter] = on_day.get(counter, 0.0) + delta

    def note_time(self, now: float) -> int:
        """The write happens on the day of ``now`` (scorer clock): its day, after noting it
        for the pruning of old day fields."""
        day = day_of(now)
        if self.latest_day is None or day > self.latest_day:
            self.latest_day = day
        return day

    def add_events(self, before: CustomerState | None, after: CustomerState, now: float) -> None:
        """One event's effect on the event counters, on the day of ``now`` (scorer clock)."""
        day = self.note_time(now)
        customer_id = after.customer_id
        runs = self._runs
        run = runs.get(customer_id)
        if run is not None:
            if run[0] == day:
                runs[customer_id] = (day, run[1], after)
                return
            self._add_run(*run)
        runs[customer_id] = (day, before, after)

    def _add_run(self, day: int, before: CustomerState | None, after: CustomerState) -> None:
        old: Mapping[str, int] = before.counts if before is not None else {}
        new = after.counts
        if new is old:
            return  # the same counters (a sweep's evaluation leaves them): nothing moved
        changed = {}
        for name in EVENT_COUNTERS:
            delta = new.get(name, 0) - old.get(name, 0)
            if delta:
                changed[name] = float(delta)
        if changed:
            self._add(changed, day)

    def add_customer(self, before: CustomerState | None, after: CustomerState) -> None:
        """A customer's change of flags, on the day(s) of its first event: a late event
        that moves ``first_seen`` back moves the customer to an earlier cohort day."""
        new_day = day_of(after.first_seen)
        if before is None:
            self._add(customer_flags(after), new_day)
        elif day_of(before.first_seen) == new_day:
            self._add(flag_changes(before, after), new_day)
        else:
            self._add(diff({}, customer_flags(before)), day_of(before.first_seen))
            self._add(customer_flags(after), new_day)

    def add_evaluation(self, before: CustomerState, after: CustomerState, now: float) -> None:
        """The sweeper's evaluation of a silent customer at ``now`` (tier and CLV move)."""
        self.add_events(before, after, now)
        self.add_customer(before, after)

    def apply_to(self, write: ShardWrite) -> None:
        for run in self._runs.values():
            self._add_run(*run)
        self._runs.clear()
        # Fields whose deltas cancelled out are left out (0.0 and -0.0 alike).
        kpi = {ALL_TIME + c: total for c, total in self.all_time.items() if total != 0.0}
        for day, counters in self.by_day.items():
            for counter, total in counters.items():
                if total != 0.0:
                    kpi[day_field(day, counter)] = total
        write.kpi = kpi
        write.kpi_cutoff_day = (
            None if self.latest_day is None else self.latest_day - RETENTION_DAYS + 1
        )


def window_days_checked(window_days: int | str) -> int:
    """``window_days`` as an int, or a ValueError naming it."""
    try:
        days = int(window_days)
    except ValueError:
        raise ValueError(f"window_days: not a whole number of days: {window_days!r}") from None
    if not 1 <= days <= RETENTION_DAYS:
        raise ValueError(
            f"window_days: must be between 1 and {RETENTION_DAYS} (days kept), got {days}"
        )
    return days


async def read_counters(
    client: Any, namespace: str, partitions: int, now: float, window_days: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(all-time counters, counters of the window of ``window_days`` days ending on the
    day of ``now``), summed over the ``partitions`` shards."""
    window_days_checked(window_days)
    today = day_of(now)
    first = today - window_days + 1
    pipe = client.pipeline(transaction=False)
    for shard in range(partitions):
        pipe.hgetall(ShardKeys(namespace, shard).kpi)
    replies: list[dict[bytes, bytes]] = await pipe.execute()
    all_time: dict[str, float] = {}
    window: dict[str, float] = {}
    for reply in replies:
        for raw_name, raw_value in reply.items():
            name = raw_name.decode()
            value = float(raw_value)
            if name.startswith(ALL_TIME):
                counter = name[len(ALL_TIME) :]
                all_time[counter] = all_time.get(counter, 0.0) + value
            elif name.startswith("d:"):
                day, _, counter = name[2:].partition(":")
                if first <= int(day) <= today:
                    window[counter] = window.get(counter, 0.0) + value
    return all_time, window


async def read_kpis(
    client: Any,
    namespace: str,
    partitions: int,
    now: float,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> dict[str, dict[str, float | None]]:
    """``{"all_time": kpis, "window": kpis}``; see the module docstring for the window."""
    all_time, window = await read_counters(client, namespace, partitions, now, window_days)
    return {"all_time": kpis(all_time), "window": kpis(window)}


async def scorer_now(client: Any, namespace: str, partitions: int, clock: str) -> float:
    """The scorer's clock as a reader sees it: the wall clock, or on the event clock the
    latest event time any shard has applied (the wall clock before any)."""
    if clock != "event":
        return time.time()
    pipe = client.pipeline(transaction=False)
    for shard in range(partitions):
        pipe.hgetall(ShardKeys(namespace, shard).meta)
    replies: list[dict[bytes, bytes]] = await pipe.execute()
    marks = [float(v) for meta in replies for k, v in meta.items() if k.startswith(b"w:")]
    return max(marks, default=time.time())


@dataclass(frozen=True, slots=True)
class KpiSource:
    """Where a worker reads the population KPIs from."""

    client: Any
    namespace: str
    partitions: int
    clock: str
    window_days: int = DEFAULT_WINDOW_DAYS

    async def report(self, window_days: int | str | None = None) -> dict[str, Any]:
        days = window_days_checked(self.window_days if window_days is None else window_days)
        now = await scorer_now(self.client, self.namespace, self.partitions, self.clock)
        found = await read_kpis(self.client, self.namespace, self.partitions, now, days)
        as_of = datetime.fromtimestamp(now, tz=UTC).isoformat()
        return {"now": now, "as_of": as_of, "window_days": days, **found}

    async def refresh_gauges(self) -> None:
        """Set ``engagement_kpi{kpi,window}``; an undefined KPI (no denominator yet) is
        NaN. Redis being unreachable leaves the gauges as they were (and logs it)."""
        try:
            found = await self.report()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("KPI gauges not refreshed: Redis unavailable (%s)", exc)
            return
        labels = {"all_time": "all", "window": f"{found['window_days']}d"}
        for view, label in labels.items():
            for kpi, value in found[view].items():
                metrics.KPI.labels(kpi, label).set(math.nan if value is None else value)


def format_report(report: Mapping[str, Any]) -> str:
    """The report as an aligned text table: one KPI per line, all-time and windowed."""
    window = f"last {report['window_days']}d"
    lines = [f"{'kpi':<24} {'all time':>12} {window:>12}"]
    for kpi, value in report["all_time"].items():
        cells = (_cell(kpi, value), _cell(kpi, report["window"].get(kpi)))
        lines.append(f"{kpi:<24} {cells[0]:>12} {cells[1]:>12}")
    return "\n".join(lines)


def _cell(kpi: str, value: float | None) -> str:
    if value is None:
        return "-"  # undefined: nothing to divide by yet
    return f"{value:.0f}" if kpi.startswith("customers") else f"{value:.2f}"
