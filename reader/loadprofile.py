"""Load profile ``P.01`` and logbook ``P.98`` as returned by an R5/R6 read.

A profile block is a run of header lines
``P.01(ZYYMMDDhhmm)(status)(period)(n)(addr1)(unit1)...(addrN)(unitN)``, each followed by
rows ``(v1)...(vN)``. The header time is the capture time of its first row; rows follow
every ``period`` minutes. Meters capture at the END of a period, so a row's interval starts
one period before its capture time. The header status applies to the rows under it: meters
start a new header whenever the status or the clock jumps.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from reader.errors import ProtocolError
from reader.meter_time import DEFAULT_ZONE, parse_meter_time
from reader.models import LoadProfileInterval, LogbookEntry
from reader.telegram import NUMBER, split_value


def _brackets(line: str, lineno: int) -> tuple[str, list[str]]:
    """Split ``NAME(a)(b)...`` into its name and bracket contents."""
    opening = line.find("(")
    if opening < 0:
        raise ProtocolError(f"profile line {lineno}: no bracket in {line[:30]!r}")
    name = line[:opening]
    contents: list[str] = []
    pos = opening
    while pos < len(line):
        if line[pos] != "(":
            if line[pos:].strip() in ("", "!"):
                break
            raise ProtocolError(f"profile line {lineno} col {pos + 1}: expected '('")
        closing = line.find(")", pos)
        if closing < 0:
            raise ProtocolError(f"profile line {lineno} col {pos + 1}: unclosed bracket")
        content = line[pos + 1:closing]
        if "(" in content or not content.isprintable():
            raise ProtocolError(f"profile line {lineno} col {pos + 2}: bad value {content[:20]!r}")
        contents.append(content)
        pos = closing + 1
    return name, contents


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r").strip()
        if line and line != "!":
            out.append((lineno, line))
    return out


def _decimal(text: str) -> Decimal | None:
    value, _ = split_value(text)
    return Decimal(value.replace(",", ".")) if NUMBER.match(value) else None


def is_error_answer(text: str) -> bool:
    """A meter answers ``(ERROR)`` (or ``P.01(ERROR)``) to an address it does not have."""
    lines = _lines(text)
    return len(lines) == 1 and lines[0][1].upper().endswith("(ERROR)")


def parse_load_profile(text: str, *, zone_name: str = DEFAULT_ZONE) -> list[LoadProfileInterval]:
    """Parse a ``P.01`` answer into intervals (UTC starts), in the meter's order."""
    intervals: list[LoadProfileInterval] = []
    header: tuple[datetime, str, timedelta, list[str], list[str | None]] | None = None
    row_index = 0
    for lineno, line in _lines(text):
        name, contents = _brackets(line, lineno)
        if name:
            if name not in ("P.01", "P.02"):
                raise ProtocolError(f"profile line {lineno}: unexpected address {name!r}")
            if len(contents) < 4:
                raise ProtocolError(f"profile line {lineno}: header needs time, status, period, count")
            captured = parse_meter_time(contents[0], zone_name)
            if captured is None:
                raise ProtocolError(f"profile line {lineno}: bad header time {contents[0]!r}")
            if not contents[2].isdigit() or not contents[3].isdigit() or int(contents[2]) == 0:
                raise ProtocolError(f"profile line {lineno}: bad period or channel count")
            count = int(contents[3])
            if len(contents) != 4 + 2 * count:
                raise ProtocolError(
                    f"profile line {lineno}: header announces {count} channels "
                    f"but has {(len(contents) - 4) // 2}"
                )
            addresses = contents[4::2]
            units = [u or None for u in contents[5::2]]
            header = (captured, contents[1], timedelta(minutes=int(contents[2])), addresses, units)
            row_index = 0
            continue
        if header is None:
            raise ProtocolError(f"profile line {lineno}: values before any header")
        captured, status, period, addresses, units = header
        if len(contents) != len(addresses):
            raise ProtocolError(
                f"profile line {lineno}: {len(contents)} values for {len(addresses)} channels"
            )
        start = captured + row_index * period - period
        intervals.append(LoadProfileInterval(
            start=start,
            values={a: _decimal(v) for a, v in zip(addresses, contents)},
            units=dict(zip(addresses, units)),
            status=status,
        ))
        row_index += 1
    return intervals


def parse_logbook(text: str, *, zone_name: str = DEFAULT_ZONE) -> list[LogbookEntry]:
    """Parse a ``P.98`` answer: one event per line with its time and status word."""
    entries: list[LogbookEntry] = []
    for lineno, line in _lines(text):
        name, contents = _brackets(line, lineno)
        if name not in ("P.98", "P.99", "P.200", "P.210", "P.211"):
            raise ProtocolError(f"logbook line {lineno}: unexpected address {name!r}")
        if len(contents) < 2:
            raise ProtocolError(f"logbook line {lineno}: needs time and status")
        moment = parse_meter_time(contents[0], zone_name)
        if moment is None:
            raise ProtocolError(f"logbook line {lineno}: bad time {contents[0]!r}")
        entries.append(LogbookEntry(timestamp=moment, status=contents[1], values=tuple(contents[2:])))
    return entries
