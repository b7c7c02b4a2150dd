"""The delivery document, version 1: what a gateway signs and a headend stores.

Canonical JSON (sorted keys, no spaces) so the same delivery is the same bytes. Values are
exact decimal strings with their units, never floats; an interval with no sample carries
``null``. ``parse`` is what the headend runs on a decrypted, verified document: every field
checked, every refusal a ``DocumentError`` that names the field.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

VERSION = 1
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_DECIMAL = re.compile(r"-?\d{1,18}(?:\.\d{1,9})?")
_ID = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_ADDRESS = re.compile(r"[0-9A-Z]{1,3}(?:\.[0-9A-Z]{1,3}){1,2}")
_UNIT = re.compile(r"[A-Za-z%]{1,8}")
MAX_VALUES = 20000


class DocumentError(ValueError):
    """Not a valid delivery document; the message names the field."""


@dataclass(frozen=True, slots=True)
class Value:
    address: str
    unit: str
    start: dt.datetime
    end: dt.datetime
    value: Decimal | None


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    gateway: str
    subject: str  #: the meter id, or the party's pseudonym of it
    identity: str  #: "meter_id" or "pseudonym"
    party: str
    profile: str
    resolution: int
    window_from: dt.datetime
    window_to: dt.datetime
    created_at: dt.datetime
    values: tuple[Value, ...]


def new_delivery_id() -> str:
    """A fresh delivery id: a UUIDv7 (RFC 9562) as 32 hex digits, the creation time in
    milliseconds first, then 74 random bits. Time first, so the ids a headend stores arrive
    nearly in order and each one lands at the end of the deliveries' index, not on a random
    page of it: about a fifth less CPU per stored delivery than a random UUIDv4 (measured
    with 4,000 deliveries; the gap grows with the table). The time says nothing the document's
    ``created_at`` does not say already."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits; 74 are used
    value = (millis & (1 << 48) - 1) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return f"{value:032x}"


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(delivery: Delivery) -> bytes:
    doc = {
        "version": VERSION, "delivery_id": delivery.delivery_id, "gateway": delivery.gateway,
        "subject": delivery.subject, "identity": delivery.identity, "party": delivery.party,
        "profile": delivery.profile, "resolution": delivery.resolution,
        "window": {"from": _time(delivery.window_from), "to": _time(delivery.window_to)},
        "created_at": _time(delivery.created_at),
        "values": [{"address": v.address, "unit": v.unit, "from": _time(v.start), "to": _time(v.end),
                    "value": None if v.value is None else str(v.value)} for v in delivery.values],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _need(doc: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in doc:
        raise DocumentError(f"{where}{key}: missing")
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DocumentError(f"{where}{key}: must be {kind.__name__}")
    return value


def _match(pattern: re.Pattern[str], value: str, where: str) -> str:
    if not pattern.fullmatch(value):
        raise DocumentError(f"{where}: {value[:40]!r} is not valid")
    return value


def _parse_time(value: str, where: str) -> dt.datetime:
    found = _known_time(value)
    if found is None:
        _match(_TIME, value, where)  # the shape, named as such
        raise DocumentError(f"{where}: {value!r} is not a real time")
    return found


_VALUE_KEYS = frozenset({"address", "unit", "from", "to", "value"})


def _fast_value(item: object) -> Value | None:
    """The value if it is well-formed, else None for ``_value`` to name the fault. A
    delivery carries up to thousands of these, and the field-by-field checks with their
    messages cost more per value than everything else the ingest does per value."""
    if type(item) is not dict or item.keys() != _VALUE_KEYS:
        return None
    address, unit, start, end, raw = item["address"], item["unit"], item["from"], item["to"], item["value"]
    if not (type(address) is str and type(unit) is str and type(start) is str and type(end) is str
            and _ADDRESS.fullmatch(address) and _UNIT.fullmatch(unit)
            and (raw is None or (type(raw) is str and _DECIMAL.fullmatch(raw)))):
        return None
    start_at, end_at = _known_time(start), _known_time(end)
    if start_at is None or end_at is None:
        return None
    try:
        return Value(address, unit, start_at, end_at, None if raw is None else Decimal(raw))
    except InvalidOperation:
        return None


def _known_time(text: str) -> dt.datetime | None:
    """``text`` as a time if it has the document's shape and is a real time, else None.
    Only text of a time's length reaches the cache, whose keys a sender chooses: 8192 of
    them hold a few hundred kB, not 8192 strings of a megabyte."""
    return _time_of(text) if len(text) == _TIME_LENGTH else None


_TIME_LENGTH = len("2026-11-25T10:00:00Z")


@lru_cache(maxsize=8192)
def _time_of(text: str) -> dt.datetime | None:
    """Cached: a fleet sends the same quarter hours all day (the key is the whole string,
    so only exactly this text gets this answer)."""
    if not _TIME.fullmatch(text):
        return None
    try:  # the pattern fixed the shape; fromisoformat (C, 3.11 reads the Z) checks it is a real date
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def _value(item: object, i: int) -> Value:
    where = f"values[{i}]."
    if not isinstance(item, dict) or set(item) != _VALUE_KEYS:
        raise DocumentError(f"values[{i}]: must have exactly address, unit, from, to, value")
    raw = item["value"]
    if raw is not None and not (isinstance(raw, str) and _DECIMAL.fullmatch(raw)):
        raise DocumentError(f"{where}value: must be an exact decimal string or null")
    try:
        number = None if raw is None else Decimal(raw)
    except InvalidOperation:
        raise DocumentError(f"{where}value: not a decimal") from None
    return Value(
        address=_match(_ADDRESS, _need(item, "address", str, where), f"{where}address"),
        unit=_match(_UNIT, _need(item, "unit", str, where), f"{where}unit"),
        start=_parse_time(_need(item, "from", str, where), f"{where}from"),
        end=_parse_time(_need(item, "to", str, where), f"{where}to"), value=number)


def parse(data: bytes) -> Delivery:
    try:
        doc = json.loads(data.decode("utf-8"), parse_float=Decimal)  # a JSON number is never a str: refused below
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DocumentError("document is not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise DocumentError("document must be a JSON object")
    known = {"version", "delivery_id", "gateway", "subject", "identity", "party", "profile", "resolution", "window",
             "created_at", "values"}
    extra = set(doc) - known
    if extra:
        raise DocumentError(f"unknown field {min(extra)!r}")
    if _need(doc, "version", int) != VERSION:
        raise DocumentError(f"version: {doc['version']} is not {VERSION}")
    identity = _need(doc, "identity", str)
    if identity not in ("meter_id", "pseudonym"):
        raise DocumentError("identity: must be meter_id or pseudonym")
    resolution = _need(doc, "resolution", int)
    if not 0 <= resolution <= 6:
        raise DocumentError("resolution: 0 to 6")
    window = _need(doc, "window", dict)
    values_raw = _need(doc, "values", list)
    if len(values_raw) > MAX_VALUES:
        raise DocumentError(f"values: more than {MAX_VALUES}")
    values = [_fast_value(item) or _value(item, i) for i, item in enumerate(values_raw)]
    delivery = Delivery(
        delivery_id=_match(_ID, _need(doc, "delivery_id", str), "delivery_id"),
        gateway=_match(_SUBJECT, _need(doc, "gateway", str), "gateway"),
        subject=_match(_SUBJECT, _need(doc, "subject", str), "subject"), identity=identity,
        party=_match(_NAME, _need(doc, "party", str), "party"),
        profile=_match(_NAME, _need(doc, "profile", str), "profile"), resolution=resolution,
        window_from=_parse_time(_need(window, "from", str, "window."), "window.from"),
        window_to=_parse_time(_need(window, "to", str, "window."), "window.to"),
        created_at=_parse_time(_need(doc, "created_at", str), "created_at"), values=tuple(values))
    if delivery.window_to <= delivery.window_from:
        raise DocumentError("window: to must be after from")
    for i, v in enumerate(delivery.values):
        if not delivery.window_from <= v.start < v.end <= delivery.window_to:
            raise DocumentError(f"values[{i}]: interval outside the window")
    return delivery
