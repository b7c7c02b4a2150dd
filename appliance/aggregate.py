"""Aggregation of meter samples over profile intervals: pure functions on exact decimals.

Periods are aligned to multiples of the interval since the Unix epoch in UTC, so every
gateway cuts the same day and quarter hour. Values are truncated toward zero to the
profile's resolution, as meter displays do: a party is never sent more than was measured.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Context, Decimal

from appliance.profiles import Aggregation

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_CONTEXT = Context(prec=34)  # decimal128: ample for any register and any mean of them


@dataclass(frozen=True, slots=True)
class Sample:
    at: dt.datetime
    value: Decimal


def period_start(moment: dt.datetime, interval_s: int) -> dt.datetime:
    seconds = int((moment - EPOCH).total_seconds())
    return EPOCH + dt.timedelta(seconds=seconds - seconds % interval_s)


def periods(start: dt.datetime, end: dt.datetime, interval_s: int) -> list[tuple[dt.datetime, dt.datetime]]:
    """Whole aligned periods inside [start, end)."""
    first = period_start(start, interval_s)
    if first < start:
        first += dt.timedelta(seconds=interval_s)
    out = []
    step = dt.timedelta(seconds=interval_s)
    while first + step <= end:
        out.append((first, first + step))
        first += step
    return out


def truncate(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN, context=_CONTEXT)


def aggregate(samples: Sequence[Sample], how: Aggregation, before: Sample | None = None) -> Decimal | None:
    """One period's value from its samples (in time order); ``before`` is the last sample of
    the previous period, which ``delta`` needs. None when the period holds no sample."""
    if not samples:
        return None
    values = [s.value for s in samples]
    if how == "last":
        return values[-1]
    if how == "max":
        return max(values)
    if how == "sum":
        return _CONTEXT.create_decimal(sum(values, Decimal(0)))
    if how == "mean":
        return _CONTEXT.divide(sum(values, Decimal(0)), Decimal(len(values)))
    start = before.value if before is not None else values[0]
    return _CONTEXT.subtract(values[-1], start)


def by_period(samples: Iterable[Sample], bounds: Sequence[tuple[dt.datetime, dt.datetime]]
              ) -> list[tuple[tuple[dt.datetime, dt.datetime], list[Sample], Sample | None]]:
    """Split time-ordered samples into the given periods; with each, the last sample before it."""
    ordered = sorted(samples, key=lambda s: s.at)
    out = []
    for lo, hi in bounds:
        inside = [s for s in ordered if lo <= s.at < hi]
        earlier = [s for s in ordered if s.at < lo]
        out.append(((lo, hi), inside, earlier[-1] if earlier else None))
    return out
