"""The write path: a ``Readout`` becomes rows, then the rows go in inside the caller's transaction.

Everything that can be refused (a naive timestamp, a float where a Decimal belongs) is
refused in ``prepare``, before any transaction starts. ``write`` only runs the inserts; the
caller (``Store.save_readout``) wraps it in one ``BEGIN IMMEDIATE`` ... ``COMMIT``.

Load-profile intervals and logbook entries use ``ON CONFLICT (key) DO NOTHING``: re-reading
an overlapping window adds only the new rows. It is ``INSERT OR IGNORE`` narrowed to the
uniqueness key, so a row breaking another constraint still fails the whole readout instead
of vanishing silently.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from appliance.store.codec import CodecError, decimal_text, optional_utc_text, utc_text
from appliance.store.errors import DuplicateReadoutError, StoreError
from reader.models import LoadProfileInterval, LogbookEntry, Reading, Readout

# Rows without the readout id, which only the INSERT into readouts yields.
ReadingRow = tuple[int, str, str, str | None, str, str | None, str | None, str, str | None, str,
                   str]
IntervalRow = tuple[str, str, str, str | None, str | None, str]
LogbookRow = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadoutRows:
    """One readout, encoded and checked, ready to insert."""

    meter_id: str
    read_at: str
    identification: str
    integrity: str
    attempts: int
    readings: list[ReadingRow]
    intervals: list[IntervalRow]
    logbook: list[LogbookRow]


def prepare(*, meter_id: str, readout: Readout, read_at: datetime, integrity: str) -> ReadoutRows:
    """Encode ``readout``; raise ``StoreError`` for anything the store will not write."""
    if not meter_id:
        raise StoreError("readout not stored: empty meter id")
    if not integrity:
        raise StoreError(f"readout of meter {meter_id} not stored: empty integrity result")
    try:
        at = utc_text(read_at, "read_at")
        return ReadoutRows(
            meter_id=meter_id, read_at=at, identification=readout.identification.text,
            integrity=integrity, attempts=readout.attempts,
            readings=[_reading(meter_id, at, integrity, seq, r)
                      for seq, r in enumerate(readout.readings)],
            intervals=[row for interval in readout.load_profile or ()
                       for row in _intervals(meter_id, interval)],
            logbook=[_logbook(meter_id, entry) for entry in readout.logbook or ()],
        )
    except CodecError as exc:
        raise StoreError(f"readout of meter {meter_id} not stored: {exc}") from None


def _reading(meter_id: str, at: str, integrity: str, seq: int, r: Reading) -> ReadingRow:
    where = f"reading {seq} ({r.address})"
    return (seq, meter_id, r.address, decimal_text(r.value, f"{where} value"), r.text, r.unit,
            optional_utc_text(r.timestamp, f"{where} timestamp"), at, r.status, integrity,
            json.dumps(list(r.extra)))


def _intervals(meter_id: str, interval: LoadProfileInterval) -> list[IntervalRow]:
    start = utc_text(interval.start, "load-profile start")
    return [(meter_id, start, address, decimal_text(value, f"load profile {address} value"),
             interval.units.get(address), interval.status)
            for address, value in interval.values.items()]


def _logbook(meter_id: str, entry: LogbookEntry) -> LogbookRow:
    return (meter_id, utc_text(entry.timestamp, "logbook timestamp"), entry.status,
            json.dumps(list(entry.values)))


def write(con: sqlite3.Connection, rows: ReadoutRows) -> int:
    """Insert one prepared readout; the caller holds the transaction. Returns the readout id."""
    readout_id = _insert_readout(con, rows)
    _insert_readings(con, readout_id, rows.readings)
    _insert_intervals(con, readout_id, rows.intervals)
    _insert_logbook(con, readout_id, rows.logbook)
    return readout_id


def _insert_readout(con: sqlite3.Connection, rows: ReadoutRows) -> int:
    found = con.execute(
        "INSERT INTO readouts (meter_id, read_at, identification, integrity, attempts) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (meter_id, read_at) DO NOTHING RETURNING id",
        (rows.meter_id, rows.read_at, rows.identification, rows.integrity, rows.attempts),
    ).fetchall()  # fetch all so the statement is finished before COMMIT
    if not found:
        raise DuplicateReadoutError(f"readout of meter {rows.meter_id} at {rows.read_at} not stored: "
                                    "the meter already has a readout at that time")
    return int(found[0][0])


def _insert_readings(con: sqlite3.Connection, readout_id: int, rows: list[ReadingRow]) -> None:
    con.executemany(
        "INSERT INTO readings (readout_id, seq, meter_id, address, value, text, unit, meter_time, "
        "read_at, status, integrity, extra_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ((readout_id, *row) for row in rows),
    )


def _insert_intervals(con: sqlite3.Connection, readout_id: int, rows: list[IntervalRow]) -> None:
    con.executemany(
        "INSERT INTO load_profile (meter_id, start, address, value, unit, status, readout_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (meter_id, start, address) DO NOTHING",
        ((*row, readout_id) for row in rows),
    )


def _insert_logbook(con: sqlite3.Connection, readout_id: int, rows: list[LogbookRow]) -> None:
    con.executemany(
        "INSERT INTO logbook (meter_id, ts, status, values_json, readout_id) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (meter_id, ts, status) DO NOTHING",
        ((*row, readout_id) for row in rows),
    )
