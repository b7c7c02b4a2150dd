"""What the store hands back: frozen records rebuilt exactly from the stored text.

Each record names its columns (``COLUMNS``) next to the constructor that reads them, so a
query and its record cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from appliance.store.codec import parse_decimal, parse_optional_utc, parse_utc

Row = tuple[Any, ...]  #: what sqlite3 returns for one row; the record gives it types


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredReadout:
    """One session with a meter: when, which meter, and whether it can be trusted."""

    id: int
    meter_id: str
    read_at: datetime  #: UTC
    identification: str  #: the meter's sign-on line
    integrity: str  #: ``"ok"`` or why not
    attempts: int

    COLUMNS: ClassVar[str] = "id, meter_id, read_at, identification, integrity, attempts"

    @classmethod
    def from_row(cls, row: Row) -> StoredReadout:
        return cls(id=row[0], meter_id=row[1], read_at=parse_utc(row[2]), identification=row[3],
                   integrity=row[4], attempts=row[5])


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredReading:
    """One data set of a readout, in the meter's order (``seq``); ``value`` is exact."""

    readout_id: int
    seq: int
    meter_id: str
    address: str
    value: Decimal | None
    text: str
    unit: str | None
    meter_time: datetime | None  #: UTC
    read_at: datetime  #: UTC, the readout's
    status: str | None
    integrity: str
    extra: tuple[str, ...]

    COLUMNS: ClassVar[str] = ("readout_id, seq, meter_id, address, value, text, unit, meter_time, "
                              "read_at, status, integrity, extra_json")

    @classmethod
    def from_row(cls, row: Row) -> StoredReading:
        return cls(readout_id=row[0], seq=row[1], meter_id=row[2], address=row[3],
                   value=parse_decimal(row[4]), text=row[5], unit=row[6],
                   meter_time=parse_optional_utc(row[7]), read_at=parse_utc(row[8]),
                   status=row[9], integrity=row[10], extra=tuple(json.loads(row[11])))


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredInterval:
    """One value of one load-profile period; ``readout_id`` is the readout that brought it."""

    meter_id: str
    start: datetime  #: UTC start of the period
    address: str
    value: Decimal | None
    unit: str | None
    status: str
    readout_id: int

    COLUMNS: ClassVar[str] = "meter_id, start, address, value, unit, status, readout_id"

    @classmethod
    def from_row(cls, row: Row) -> StoredInterval:
        return cls(meter_id=row[0], start=parse_utc(row[1]), address=row[2],
                   value=parse_decimal(row[3]), unit=row[4], status=row[5], readout_id=row[6])


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredLogbookEntry:
    """One logbook event; ``readout_id`` is the readout that brought it first."""

    meter_id: str
    timestamp: datetime  #: UTC
    status: str
    values: tuple[str, ...]
    readout_id: int

    COLUMNS: ClassVar[str] = "meter_id, ts, status, values_json, readout_id"

    @classmethod
    def from_row(cls, row: Row) -> StoredLogbookEntry:
        return cls(meter_id=row[0], timestamp=parse_utc(row[1]), status=row[2],
                   values=tuple(json.loads(row[3])), readout_id=row[4])


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One sealed delivery waiting for (or past) its acknowledgement."""

    id: int
    delivery_id: str
    party: str
    profile: str
    window_from: datetime
    window_to: datetime
    payload: bytes
    summary: str
    attempts: int
    next_attempt_at: datetime
    acked_at: datetime | None

    COLUMNS: ClassVar[str] = ("id, delivery_id, party, profile, window_from, window_to, payload, summary, attempts, "
                              "next_attempt_at, acked_at")

    @classmethod
    def from_row(cls, row: Row) -> OutboxItem:
        return cls(id=row[0], delivery_id=row[1], party=row[2], profile=row[3],
                   window_from=parse_utc(row[4]), window_to=parse_utc(row[5]), payload=bytes(row[6]),
                   summary=row[7], attempts=row[8], next_attempt_at=parse_utc(row[9]),
                   acked_at=parse_optional_utc(row[10]))
