"""Meter local time to UTC.

Meters write local wall time, sometimes with a season marker: a leading digit
(0 = standard time, 1 = summer time, 2 = UTC, IEC 62056-21 load profiles) or a
trailing ``W``/``S`` (DSMR). The marker decides the offset; without one the
configured zone's rules do. Everything after this edge is UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

DEFAULT_ZONE = "Europe/Berlin"
_ONE_HOUR = timedelta(hours=1)


@lru_cache(maxsize=16)
def zone(name: str) -> tzinfo:
    """Cached: constructing a ZoneInfo reads a file."""
    return ZoneInfo(name)


@lru_cache(maxsize=64)
def _standard_offset(zone_name: str, year: int) -> timedelta:
    offset = datetime(year, 1, 15, 12, tzinfo=zone(zone_name)).utcoffset()
    return offset if offset is not None else timedelta(0)


def to_utc(local: datetime, season: str | None, zone_name: str = DEFAULT_ZONE) -> datetime:
    """Convert a naive meter wall time to aware UTC using the season marker if any."""
    if season in ("2",):
        return local.replace(tzinfo=UTC)
    if season in ("0", "W"):
        return (local - _standard_offset(zone_name, local.year)).replace(tzinfo=UTC)
    if season in ("1", "S"):
        offset = _standard_offset(zone_name, local.year) + _ONE_HOUR
        return (local - offset).replace(tzinfo=UTC)
    return (local - _wall_offset(zone_name, local.year, local.month, local.day, local.hour)).replace(
        tzinfo=UTC
    )


@lru_cache(maxsize=4096)
def _wall_offset(zone_name: str, year: int, month: int, day: int, hour: int) -> timedelta:
    """The zone's UTC offset for a wall-clock hour (zoneinfo's answer, fold=0), cached:
    a meter repeats the same few times (max-demand stamps) in every readout."""
    offset = datetime(year, month, day, hour, tzinfo=zone(zone_name)).utcoffset()
    return offset if offset is not None else timedelta(0)


@lru_cache(maxsize=2048)
def parse_meter_time(text: str, zone_name: str = DEFAULT_ZONE) -> datetime | None:
    """``[Z]YYMMDDhhmm[ss][W|S]`` to UTC, or None when the text is not such a time.

    Cached: pure, and a meter repeats the same stamps (max-demand times, billing dates)
    in every readout.
    """
    n = len(text)
    if n < 10 or n > 13:
        return None
    season: str | None = None
    digits = text
    last = text[-1]
    if last == "W" or last == "S":
        season, digits = last, text[:-1]
    elif n in (11, 13):
        season, digits = text[0], text[1:]
        if season not in ("0", "1", "2"):
            return None
    if len(digits) not in (10, 12) or not digits.isdigit() or not digits.isascii():
        return None
    try:
        local = datetime(
            2000 + int(digits[0:2]), int(digits[2:4]), int(digits[4:6]),
            int(digits[6:8]), int(digits[8:10]), int(digits[10:12]) if len(digits) == 12 else 0,
        )
    except ValueError:
        return None
    return to_utc(local, season, zone_name)


def format_meter_time(moment: datetime, zone_name: str = DEFAULT_ZONE) -> str:
    """UTC (aware) to ``ZYYMMDDhhmm`` in the meter's zone, the form R5 ``P.01(...)`` wants."""
    local = moment.astimezone(zone(zone_name))
    dst = local.dst()
    season = "1" if dst else "0"
    return season + local.strftime("%y%m%d%H%M")
