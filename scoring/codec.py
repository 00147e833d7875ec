"""The compact binary form of a CustomerState, as stored in Redis (opaque to Lua).

Layout, little-endian; every block is read or written with one ``struct`` call, since a
batch decodes and encodes each customer it touches:

    header   version u8 (= 2), flags u8, churn_level u8, count width u8, churn_alerts u32,
             decayed mask u32, counts mask u64, alerts mask u16, recent n u16, digest width
             u8, customer id length u16, then landmark, first_seen, last_seen,
             evaluated_at, churn_risk, next_check_at (f64; NaN for none): 73 bytes
    id       the customer id, UTF-8
    decayed  one f64 per bit of the mask, in DECAYED_FEATURES order
    counts   one signed int per bit, in COUNT_NAMES order, all of the smallest width
             (1, 2, 4 or 8 bytes) that holds them
    alerts   one f64 per bit, in ALERT_KINDS order
    recent   n digests, then their n times (f64)
    buyer    when a flag says so: i32 first and last purchase day and purchase days,
             f64 spend, first day's spend and clv, u64 bitmaps of products and
             categories bought and of purchase days (60 bytes)
    activity when a flag says so: u32 session key, f64 session start, u32 session hits,
             i8 last NPS, i32 last play day, u64 bitmap of items seen, u8 tier (30 bytes)
    extras   when a flag says so: names outside the fixed orders (JSON), so any state
             round-trips

Every float is stored as its float64 bits: decoding gives back exactly the values that
were encoded. The fixed orders come from code (scoring/features.py), not from the config.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from functools import lru_cache
from operator import itemgetter
from typing import Any, Final

import orjson

from scoring.names import ALERT_KINDS, COUNT_NAMES, DECAYED_FEATURES, TIERS
from scoring.state import CustomerState, build_state

VERSION: Final = 2
_F_EXACT: Final = 1
_F_CONVERTED: Final = 2
_F_EXTRAS: Final = 8
_F_BUYER: Final = 16
_F_ACTIVITY: Final = 32
_HEAD: Final = struct.Struct("<BBBBIIQHHBH6d")
_BUYER: Final = struct.Struct("<iiidddQQQ")
_ACTIVITY: Final = struct.Struct("<IdIbiQB")
_INT_CODES: Final = {1: "b", 2: "h", 4: "i", 8: "q"}
_TIER_INDEX: Final = {n: i for i, n in enumerate(TIERS)}
# The masks' widths in the header bound how long the fixed orders may grow.
assert len(DECAYED_FEATURES) <= 32 and len(COUNT_NAMES) <= 64 and len(ALERT_KINDS) <= 16


_NAMES: dict[tuple[int, int], tuple[str, ...]] = {}
_ORDERS: Final = (DECAYED_FEATURES, COUNT_NAMES, ALERT_KINDS)


def _names(which: int, mask: int) -> tuple[str, ...]:
    """The names of the set bits of a mask over order ``which`` (customers share a
    handful of masks: cached)."""
    names = _NAMES.get((which, mask))
    if names is None:
        order = _ORDERS[which]
        names = _NAMES[which, mask] = tuple(n for i, n in enumerate(order) if mask >> i & 1)
    return names


@lru_cache(maxsize=4096)
def _layout(
    keys: tuple[str, ...], which: int
) -> tuple[int, Callable[[dict[str, Any]], Any], int, tuple[str, ...]]:
    """For a dict with these keys: (mask, getter of the values in the fixed order
    ``_ORDERS[which]``, how many, the keys outside the order). Customers share a handful
    of key sets: cached (by the order's index: a key the cache hashes on every call)."""
    order = _ORDERS[which]
    present = [n for n in order if n in keys]
    mask = sum(1 << order.index(n) for n in present)
    if not present:
        return mask, lambda _: (), 0, tuple(k for k in keys if k not in order)
    getter = itemgetter(*present)
    get = getter if len(present) > 1 else (lambda d: (getter(d),))
    return mask, get, len(present), tuple(k for k in keys if k not in order)


@lru_cache(maxsize=1024)
def _block(count: int, code: str) -> struct.Struct:
    return struct.Struct(f"<{count}{code}")


@lru_cache(maxsize=1024)
def _digests(count: int, width: int) -> struct.Struct:
    return struct.Struct("<" + f"{width}s" * count)


def _int_width(values: tuple[int, ...]) -> int:
    low, high = min(values, default=0), max(values, default=0)
    for width in (1, 2, 4):
        limit = 1 << (8 * width - 1)
        if -limit <= low and high < limit:
            return width
    return 8


@lru_cache(maxsize=4096)
def _front(cid_len: int, n_decayed: int, n_counts: int, width: int, n_alerts: int) -> struct.Struct:
    """The header, the customer id and the decayed, counts and alerts blocks as one
    struct: "<" packs without padding, so the bytes are those of packing each part on its
    own, in one call instead of five."""
    code = _INT_CODES[width]
    return struct.Struct(f"{_HEAD.format}{cid_len}s{n_decayed}d{n_counts}{code}{n_alerts}d")


def _recent(state: CustomerState) -> tuple[int, int, bytes, bytes]:
    """The recent block: (how many digests, their width, the digests, their times)."""
    recent = state.recent_events
    digest_width = len(next(iter(recent))) // 2 if recent else 0
    digests = bytes.fromhex("".join(recent))
    if len(digests) != digest_width * len(recent):
        raise ValueError(f"recent_events: digests of mixed lengths ({sorted(recent)!r})")
    return len(recent), digest_width, digests, _block(len(recent), "d").pack(*recent.values())


def _tail(state: CustomerState) -> tuple[int, bytes, bytes]:
    """The flags but the extras', and the buyer and activity blocks (each b"" when every
    field of it is at its default)."""
    flags = (_F_EXACT if state.check_exact else 0) | (
        _F_CONVERTED if state.session_converted else 0
    )
    buyer = activity = b""
    if (
        state.first_purchase_day >= 0
        or state.purchase_days
        or state.products_bought
        or state.categories
        or state.clv
        or state.spend
        or state.purchase_day_bits
    ):
        flags |= _F_BUYER
        buyer = _BUYER.pack(
            state.first_purchase_day,
            state.last_purchase_day,
            state.purchase_days,
            state.spend,
            state.first_day_spend,
            state.clv,
            state.products_bought,
            state.categories,
            state.purchase_day_bits,
        )
    if (
        state.session
        or state.last_nps >= 0
        or state.last_play_day >= 0
        or state.items_seen
        or state.tier
    ):
        flags |= _F_ACTIVITY
        activity = _ACTIVITY.pack(
            state.session,
            state.session_start,
            state.session_hits,
            state.last_nps,
            state.last_play_day,
            state.items_seen,
            _TIER_INDEX[state.tier],
        )
    return flags, buyer, activity


def encode(state: CustomerState) -> bytes:
    # The three dicts split into (mask, values in their fixed order, names outside it).
    decayed, counts, alerts = state.decayed, state.counts, state.last_alert_at
    d_mask, d_get, _, d_outside = _layout(tuple(decayed), 0)
    c_mask, c_get, _, c_outside = _layout(tuple(counts), 1)
    a_mask, a_get, _, a_outside = _layout(tuple(alerts), 2)
    d_values, c_values, a_values = d_get(decayed), c_get(counts), a_get(alerts)
    width = _int_width(c_values)
    n_recent, digest_width, digests, times = _recent(state)
    flags, buyer, activity = _tail(state)
    extras = None
    if d_outside or c_outside or a_outside:
        outside = (("d", decayed, d_outside), ("n", counts, c_outside), ("t", alerts, a_outside))
        extras = {k: {n: values[n] for n in names} for k, values, names in outside if names}
        flags |= _F_EXTRAS
    cid = state.customer_id.encode()
    check = state.next_check_at
    front = _front(len(cid), len(d_values), len(c_values), width, len(a_values))
    parts = [
        front.pack(
            VERSION,
            flags,
            state.churn_level,
            width,
            state.churn_alerts,
            d_mask,
            c_mask,
            a_mask,
            n_recent,
            digest_width,
            len(cid),
            state.landmark,
            state.first_seen,
            state.last_seen,
            state.evaluated_at,
            state.churn_risk,
            math.nan if check is None else check,
            cid,
            *d_values,
            *c_values,
            *a_values,
        ),
        digests,
        times,
        buyer,
        activity,
    ]
    if extras:
        parts.append(orjson.dumps(extras))
    return b"".join(parts)


# From the decayed mask to the customer id's length: the header's fields after the first
# eight bytes.
_HEAD_MASKS: Final = struct.Struct("<IQHHBH")


def encode_evaluated(raw: bytes, before: CustomerState, after: CustomerState) -> bytes:
    """``encode(after)``, where ``raw`` is ``encode(before)`` and ``after`` has
    ``before``'s customer id and decayed sums and counts (the same dicts, as an evaluation
    leaves them): the id and those two blocks, most of a state's bytes, are copied from
    ``raw``; the header and the other blocks are packed from ``after``. The sweeper
    encodes every state it evaluates; packing the unchanged blocks again cost about half
    of it. Any other ``raw`` (the JSON form, extras) is encoded whole."""
    alerts = after.last_alert_at
    a_mask, a_get, n_alerts, a_outside = _layout(tuple(alerts), 2)
    if (
        after.decayed is not before.decayed
        or after.counts is not before.counts
        or after.customer_id != before.customer_id
        or a_outside
        or len(raw) < _HEAD.size
        or raw[0] != VERSION
        or raw[1] & _F_EXTRAS
    ):
        return encode(after)
    width = raw[3]
    d_mask, c_mask, _, _, _, cid_len = _HEAD_MASKS.unpack_from(raw, 8)
    kept = _HEAD.size + cid_len + 8 * d_mask.bit_count() + width * c_mask.bit_count()
    n_recent, digest_width, digests, times = _recent(after)
    flags, buyer, activity = _tail(after)
    check = after.next_check_at
    return b"".join(
        (
            _HEAD.pack(
                VERSION,
                flags,
                after.churn_level,
                width,
                after.churn_alerts,
                d_mask,
                c_mask,
                a_mask,
                n_recent,
                digest_width,
                cid_len,
                after.landmark,
                after.first_seen,
                after.last_seen,
                after.evaluated_at,
                after.churn_risk,
                math.nan if check is None else check,
            ),
            raw[_HEAD.size : kept],
            _block(n_alerts, "d").pack(*a_get(alerts)),
            digests,
            times,
            buyer,
            activity,
        )
    )


_CHECK_AT: Final = struct.Struct("<d")
_CHECK_OFFSET: Final = _HEAD.size - _CHECK_AT.size  # next_check_at: the header's last field


def with_exact_check(raw: bytes, next_check_at: float | None) -> bytes | None:
    """``encode(decode(raw).evolve(next_check_at=..., check_exact=True))`` without the
    decode and encode: the sweeper settles most due customers, whose check time alone
    moves (encoding is a function of the values, so only those bytes change). None for a
    state in the JSON form, which is re-encoded instead."""
    if raw[:1] != bytes((VERSION,)) or len(raw) < _HEAD.size:
        return None
    patched = bytearray(raw)
    patched[1] |= _F_EXACT
    check = math.nan if next_check_at is None else next_check_at
    _CHECK_AT.pack_into(patched, _CHECK_OFFSET, check)
    return bytes(patched)


def _decode_json(raw: bytes) -> CustomerState:
    # The JSON form stored before this encoding: still read, so an upgrade loses nothing;
    # the next commit writes the state back in the compact form.
    d: dict[str, Any] = orjson.loads(raw)
    return CustomerState(
        customer_id=d["c"],
        landmark=d["L"],
        decayed=d["d"],
        counts=d["n"],
        first_seen=d["f"],
        last_seen=d["l"],
        churn_risk=d["r"],
        churn_level=d["v"],
        churn_alerts=d["a"],
        last_alert_at=d["t"],
        next_check_at=d["x"],
        check_exact=d.get("k", True),
        evaluated_at=d["e"],
        recent_events=d["i"],
    )


def decode(raw: bytes) -> CustomerState:
    if raw[:1] == b"{":
        return _decode_json(raw)
    try:
        return _decode(raw)
    except (struct.error, IndexError) as exc:
        raise ValueError(f"customer state: truncated or corrupt ({exc})") from None


def _decode(raw: bytes) -> CustomerState:
    (
        version,
        flags,
        churn_level,
        width,
        churn_alerts,
        d_mask,
        c_mask,
        a_mask,
        n_recent,
        digest_width,
        cid_len,
        landmark,
        first_seen,
        last_seen,
        evaluated_at,
        churn_risk,
        check,
    ) = _HEAD.unpack_from(raw)
    if version != VERSION:
        raise ValueError(f"customer state: unknown encoding version {version}")
    pos = _HEAD.size + cid_len
    customer_id = raw[_HEAD.size : pos].decode()

    names = _names(0, d_mask)
    decayed = dict(zip(names, _block(len(names), "d").unpack_from(raw, pos), strict=True))
    pos += 8 * len(names)
    names = _names(1, c_mask)
    code = _INT_CODES.get(width)
    if code is None:
        raise ValueError(f"customer state: bad count width {width}")
    counts = dict(zip(names, _block(len(names), code).unpack_from(raw, pos), strict=True))
    pos += width * len(names)
    names = _names(2, a_mask)
    alerts = dict(zip(names, _block(len(names), "d").unpack_from(raw, pos), strict=True))
    pos += 8 * len(names)

    recent: dict[str, float] = {}
    if n_recent:
        digests = map(bytes.hex, _digests(n_recent, digest_width).unpack_from(raw, pos))
        pos += n_recent * digest_width
        recent = dict(zip(digests, _block(n_recent, "d").unpack_from(raw, pos), strict=True))
        pos += 8 * n_recent

    buyer: tuple[Any, ...] = (-1, -1, 0, 0.0, 0.0, 0.0, 0, 0, 0)
    if flags & _F_BUYER:
        buyer = _BUYER.unpack_from(raw, pos)
        pos += _BUYER.size
    activity: tuple[Any, ...] = (0, 0.0, 0, -1, -1, 0, 0)
    if flags & _F_ACTIVITY:
        activity = _ACTIVITY.unpack_from(raw, pos)
        pos += _ACTIVITY.size
    if flags & _F_EXTRAS:
        extras: dict[str, dict[str, Any]] = orjson.loads(raw[pos:])
        decayed.update(extras.get("d", {}))
        counts.update(extras.get("n", {}))
        alerts.update(extras.get("t", {}))
    elif pos != len(raw):
        if pos > len(raw):
            raise ValueError(f"customer state: truncated ({len(raw)} of {pos} bytes)")
        raise ValueError(f"customer state: {len(raw) - pos} unexpected trailing bytes")
    first_day, last_day, days, spend, first_spend, clv, bought, categories, day_bits = buyer
    session, session_start, session_hits, last_nps, last_play_day, seen, tier = activity
    return build_state(
        customer_id,
        landmark,
        decayed,
        counts,
        first_seen,
        last_seen,
        churn_risk,
        churn_level,
        churn_alerts,
        alerts,
        None if check != check else check,  # NaN: no check scheduled
        bool(flags & _F_EXACT),
        evaluated_at,
        recent,
        first_day,
        last_day,
        days,
        day_bits,
        spend,
        first_spend,
        session,
        session_start,
        session_hits,
        bool(flags & _F_CONVERTED),
        last_nps,
        last_play_day,
        bought,
        seen,
        categories,
        TIERS[tier],
        clv,
    )
