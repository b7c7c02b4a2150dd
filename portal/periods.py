"""Chart periods in the meter's local time: the buckets of a day, week, month or year.

Pure. Bucket edges are computed on the local calendar and converted to UTC, so a day with
a DST change has 23 or 25 hourly buckets and a month its real number of days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Kind = Literal["day", "week", "month", "year"]
KINDS: tuple[Kind, ...] = ("day", "week", "month", "year")


@dataclass(frozen=True, slots=True)
class Period:
    kind: Kind
    first: date          #: the local date the period starts on
    edges: tuple[datetime, ...]  #: UTC, len(buckets) + 1
    labels: tuple[str, ...]      #: one per bucket: hour, weekday index, day of month, month number

    @property
    def start(self) -> datetime:
        return self.edges[0]

    @property
    def end(self) -> datetime:
        return self.edges[-1]


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def first_day(kind: Kind, anchor: date) -> date:
    if kind == "week":
        return anchor - timedelta(days=anchor.weekday())
    if kind == "month":
        return anchor.replace(day=1)
    if kind == "year":
        return anchor.replace(month=1, day=1)
    return anchor


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def next_first(kind: Kind, first: date) -> date:
    if kind == "day":
        return first + timedelta(days=1)
    if kind == "week":
        return first + timedelta(days=7)
    if kind == "month":
        return _add_months(first, 1)
    return first.replace(year=first.year + 1)


def previous_first(kind: Kind, first: date) -> date:
    if kind == "day":
        return first - timedelta(days=1)
    if kind == "week":
        return first - timedelta(days=7)
    if kind == "month":
        return _add_months(first, -1)
    return first.replace(year=first.year - 1)


def period(kind: Kind, anchor: date, zone: ZoneInfo) -> Period:
    first = first_day(kind, anchor)
    after = next_first(kind, first)
    if kind == "day":
        start, end = _midnight(first, zone), _midnight(after, zone)
        edges = []
        moment = start
        while moment < end:
            edges.append(moment)
            moment += timedelta(hours=1)
        edges.append(end)
        labels = tuple(f"{e.astimezone(zone).hour:02d}" for e in edges[:-1])
        return Period(kind, first, tuple(edges), labels)
    if kind == "year":
        days = [_add_months(first, m) for m in range(13)]
        return Period(kind, first, tuple(_midnight(d, zone) for d in days), tuple(str(m) for m in range(1, 13)))
    count = (after - first).days
    days = [first + timedelta(days=i) for i in range(count + 1)]
    labels = tuple(str(d.weekday()) if kind == "week" else str(d.day) for d in days[:-1])
    return Period(kind, first, tuple(_midnight(d, zone) for d in days), labels)


def quarter_hours(day: date, zone: ZoneInfo) -> tuple[datetime, ...]:
    """The UTC starts of a local day's 15-minute intervals, and the day's end (92-100 edges)."""
    start, end = _midnight(day, zone), _midnight(day + timedelta(days=1), zone)
    count = int((end - start).total_seconds() // 900)
    return tuple(start + timedelta(minutes=15 * i) for i in range(count + 1))
