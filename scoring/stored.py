"""A few fields of a stored customer state, read without decoding the rest.

The sweeper settles most due customers: their stored check time was a cheap lower bound,
and the exact one (``scoring.schedule``) turns out later, so only that time moves. Settling
reads a dozen fields; decoding a state whole (``scoring.codec.decode``) cost more than
settling it. Here those fields are read from the compact form in place, one ``struct``
call for the blocks, each the value ``decode`` gives (tests/unit/scoring/
test_scoring_stored.py compares the two on arbitrary states).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Final, NamedTuple

# The compact form's layout is scoring.codec's: read here, never written.
from scoring.codec import (
    _ACTIVITY,
    _BUYER,
    _F_ACTIVITY,
    _F_BUYER,
    _F_EXACT,
    _F_EXTRAS,
    _HEAD,
    _HEAD_MASKS,
    _INT_CODES,
    VERSION,
)
from scoring.names import (
    ACTIVITY_LONG,
    ACTIVITY_SHORT,
    ALERT_KINDS,
    BAD_EXPERIENCES,
    COUNT_NAMES,
    DECAYED_FEATURES,
    TIERS,
)

# The header's six times.
_HEAD_TIMES: Final = struct.Struct("<6d")
_TIMES_AT: Final = _HEAD.size - _HEAD_TIMES.size


class CheckInputs(NamedTuple):
    """What settling a customer's check time reads of their state
    (``scoring.schedule.settled_check_at``), each the value ``decode`` gives: ``short``,
    ``long`` and ``bad`` the decayed sums (0.0 when absent), ``open_tickets`` as
    ``scores.open_tickets`` counts them, ``churn_alert_at`` the last churn alert's time."""

    churn_level: int
    next_check_at: float | None
    check_exact: bool
    evaluated_at: float
    landmark: float
    last_seen: float
    short: float
    long: float
    bad: float
    open_tickets: int
    churn_alert_at: float | None
    purchase_days: int
    first_purchase_day: int
    last_purchase_day: int


_BUYER_DAYS: Final = struct.Struct("<iii")  # the buyer block's first, last and purchase days
_SETTLE_READS: Final = (
    (DECAYED_FEATURES, (ACTIVITY_SHORT, ACTIVITY_LONG, BAD_EXPERIENCES)),
    (COUNT_NAMES, ("tickets_opened", "tickets_resolved")),
    (ALERT_KINDS, ("churn_risk",)),
)


@lru_cache(maxsize=1024)
def _settle_layout(
    d_mask: int, c_mask: int, a_mask: int, width: int
) -> tuple[struct.Struct, tuple[bool, ...], int] | None:
    """(a struct reading, from the end of the id, those of the names settling reads that
    the masks have, skipping the rest; which of them it reads; the size of the decayed,
    counts and alerts blocks). None for masks with bits past their order."""
    fmt, present, start, covered = ["<"], [], 0, 0
    masks = (d_mask, c_mask, a_mask)
    for mask, (order, names), size in zip(masks, _SETTLE_READS, (8, width, 8), strict=True):
        if mask >> len(order):
            return None
        code = _INT_CODES[width] if order is COUNT_NAMES else "d"
        for name in names:
            bit = order.index(name)
            present.append(bool(mask >> bit & 1))
            if present[-1]:
                at = start + size * (mask & ((1 << bit) - 1)).bit_count()
                fmt.append(f"{at - covered}x{code}")
                covered = at + size
        start += size * mask.bit_count()
    return struct.Struct("".join(fmt)), tuple(present), start


def check_inputs(raw: bytes) -> CheckInputs | None:
    """The fields of a stored state that settling reads, without decoding the others
    (the sweeper settles most due customers, and decoding a state whole costs more than
    settling it). None for a state in the JSON form, with extras, or not well formed:
    ``decode`` reads it (and says what is wrong with it)."""
    fields = stored_fields(raw)
    return None if fields is None else CheckInputs(*fields)


# CheckInputs' fields as a plain tuple: a named tuple is built by a Python-level __new__,
# which cost the sweeper as much as reading the fields (scoring.schedule.settle_stored).
Fields = tuple[
    int, float | None, bool, float, float, float, float, float, float, int, float | None,
    int, int, int,
]  # fmt: skip


def stored_fields(raw: bytes) -> Fields | None:
    """``check_inputs`` as a plain tuple, in CheckInputs' order."""
    if len(raw) < _HEAD.size or raw[0] != VERSION:
        return None
    flags, level, width = raw[1], raw[2], raw[3]
    if flags & _F_EXTRAS or width not in _INT_CODES:
        return None
    d_mask, c_mask, a_mask, n_recent, digest_width, cid_len = _HEAD_MASKS.unpack_from(raw, 8)
    layout = _settle_layout(d_mask, c_mask, a_mask, width)
    if layout is None:
        return None
    reads, present, blocks = layout
    pos = _HEAD.size + cid_len
    buyer_at = pos + blocks + n_recent * (digest_width + 8)
    end = buyer_at + (_BUYER.size if flags & _F_BUYER else 0)
    if end + (_ACTIVITY.size if flags & _F_ACTIVITY else 0) != len(raw):
        return None
    if flags & _F_ACTIVITY and raw[-1] >= len(TIERS):  # the tier, the last byte
        return None
    raw[_HEAD.size : pos].decode()  # as decode does: an id that is not UTF-8 raises
    landmark, _, last_seen, evaluated_at, _, check = _HEAD_TIMES.unpack_from(raw, _TIMES_AT)
    # in the blob's order: short, long, bad, tickets opened and resolved, churn alert
    values = iter(reads.unpack_from(raw, pos))
    short = next(values) if present[0] else 0.0
    long = next(values) if present[1] else 0.0
    bad = next(values) if present[2] else 0.0
    tickets = (next(values) if present[3] else 0) - (next(values) if present[4] else 0)
    churn_alert_at = next(values) if present[5] else None
    first, last, days = _BUYER_DAYS.unpack_from(raw, buyer_at) if end > buyer_at else (-1, -1, 0)
    return (
        level,
        None if check != check else check,  # NaN: no check scheduled
        bool(flags & _F_EXACT),
        evaluated_at,
        landmark,
        last_seen,
        short,
        long,
        bad,
        max(0, tickets),
        churn_alert_at,
        days,
        first,
        last,
    )
