"""The text forms the store writes: exact decimals and fixed-width UTC timestamps.

Decimals are stored as ``str(Decimal)`` TEXT, never REAL: billed energy must come back digit
for digit, trailing zeros included (``0.000`` is not ``0``). Timestamps are UTC ISO 8601
with the microseconds always written, so every timestamp has the same width and text order
is time order: range queries compare strings and can use the indexes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal


class CodecError(ValueError):
    """A value the store will not write (the caller turns it into a ``StoreError``)."""


def utc_text(moment: datetime, what: str) -> str:
    """``moment`` as UTC text; a naive datetime is refused, its zone would be a guess."""
    if not isinstance(moment, datetime):
        raise CodecError(f"{what} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CodecError(f"{what} {moment.isoformat()} has no timezone; the store keeps UTC only")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def optional_utc_text(moment: datetime | None, what: str) -> str | None:
    """``utc_text`` that lets None through (a reading without a meter timestamp)."""
    return None if moment is None else utc_text(moment, what)


def parse_utc(text: str) -> datetime:
    """Inverse of ``utc_text``: an aware datetime in UTC."""
    return datetime.fromisoformat(text).astimezone(UTC)


def parse_optional_utc(text: str | None) -> datetime | None:
    """``parse_utc`` that lets NULL through."""
    return None if text is None else parse_utc(text)


def decimal_text(value: Decimal | None, what: str) -> str | None:
    """Exact text of a decimal; anything else (a float above all) is refused, not rounded."""
    if value is None:
        return None
    if not isinstance(value, Decimal):
        raise CodecError(f"{what} must be a Decimal, not {type(value).__name__}")
    return str(value)


def parse_decimal(text: str | None) -> Decimal | None:
    """Inverse of ``decimal_text``: ``Decimal(str(d))`` keeps every digit and the exponent."""
    return None if text is None else Decimal(text)
