"""SQLite store in WAL mode: a readout is stored whole, in one transaction, or not at all.

``synchronous=FULL`` so that a readout the loop has reported stored survives power loss;
explicit ``BEGIN IMMEDIATE``/``COMMIT`` (autocommit mode otherwise) so a kill between two
statements leaves only a transaction that SQLite rolls back on the next open.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from types import TracebackType

from appliance.store.errors import StoreError
from appliance.store.migrations import LATEST, MIGRATIONS
from reader.models import Readout


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredReadout:
    id: int
    meter_id: str
    read_at: datetime
    identification: str
    integrity: str
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredReading:
    seq: int
    address: str
    value: Decimal | None
    text: str
    unit: str | None
    meter_time: datetime | None
    status: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredInterval:
    start: datetime
    address: str
    value: Decimal | None
    unit: str | None
    status: str


def _utc_text(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise StoreError("timestamps must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat()


def _dec(text: str | None) -> Decimal | None:
    return Decimal(text) if text is not None else None


class Store:
    """One connection to the gateway database."""

    def __init__(self, con: sqlite3.Connection, path: Path) -> None:
        self._con = con
        self.path = path

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> Store:
        try:
            if read_only:
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            else:
                path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
                if not path.exists():
                    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o640)
                    os.close(fd)
                con = sqlite3.connect(path, isolation_level=None)
            con.execute("PRAGMA busy_timeout = 5000")
            con.execute("PRAGMA foreign_keys = ON")
            if not read_only:
                con.execute("PRAGMA journal_mode = WAL")
                con.execute("PRAGMA synchronous = FULL")
            store = cls(con, path)
            version = store.schema_version()
            if version > LATEST:
                con.close()
                raise StoreError(f"{path}: schema version {version} is newer than this smgw knows ({LATEST})")
            if read_only:
                if version < LATEST:
                    con.close()
                    raise StoreError(f"{path}: database not initialised (schema {version})")
            else:
                store._migrate(version)
            return store
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from None

    def _migrate(self, current: int) -> None:
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            try:
                self._con.execute("BEGIN IMMEDIATE")
                for statement in sql.split(";"):
                    if statement.strip():
                        self._con.execute(statement)
                self._con.execute(f"PRAGMA user_version = {int(version)}")
                self._con.execute("COMMIT")
            except sqlite3.Error as exc:
                self._con.execute("ROLLBACK")
                raise StoreError(f"{self.path}: migration {version} failed: {exc}") from None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def schema_version(self) -> int:
        return int(self._con.execute("PRAGMA user_version").fetchone()[0])

    def integrity_check(self) -> str:
        return str(self._con.execute("PRAGMA integrity_check").fetchone()[0])

    def save_readout(self, *, meter_id: str, readout: Readout, read_at: datetime, integrity: str = "ok") -> int:
        """Store the readout with all its readings, profile rows and logbook entries, atomically."""
        at = _utc_text(read_at)
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                cur = con.execute(
                    "INSERT INTO readouts (meter_id, read_at, identification, integrity, attempts) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (meter_id, at, readout.identification.text, integrity, readout.attempts),
                )
                rid = int(cur.lastrowid or 0)
                con.executemany(
                    "INSERT INTO readings (readout_id, seq, meter_id, address, value, text, unit, "
                    "meter_time, read_at, status, integrity) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (rid, seq, meter_id, r.address, None if r.value is None else str(r.value), r.text,
                         r.unit, None if r.timestamp is None else _utc_text(r.timestamp), at, r.status, integrity)
                        for seq, r in enumerate(readout.readings)
                    ],
                )
                for row in readout.load_profile or ():
                    con.executemany(
                        "INSERT OR IGNORE INTO load_profile (meter_id, start, address, value, unit, status, "
                        "readout_id) VALUES (?,?,?,?,?,?,?)",
                        [
                            (meter_id, _utc_text(row.start), addr, None if v is None else str(v),
                             row.units.get(addr), row.status, rid)
                            for addr, v in row.values.items()
                        ],
                    )
                con.executemany(
                    "INSERT OR IGNORE INTO logbook (meter_id, ts, status, values_json, readout_id) VALUES (?,?,?,?,?)",
                    [(meter_id, _utc_text(e.timestamp), e.status, json.dumps(list(e.values)), rid)
                     for e in readout.logbook or ()],
                )
                con.execute("COMMIT")
                return rid
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"readout of {meter_id} at {at} not stored: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: readout not stored: {exc}") from None

    _READOUT_COLS = "id, meter_id, read_at, identification, integrity, attempts"

    @staticmethod
    def _readout(row: tuple[int, str, str, str, str, int]) -> StoredReadout:
        return StoredReadout(id=row[0], meter_id=row[1], read_at=datetime.fromisoformat(row[2]),
                             identification=row[3], integrity=row[4], attempts=row[5])

    def latest_readout(self, meter_id: str | None = None) -> StoredReadout | None:
        if meter_id is None:
            row = self._con.execute(f"SELECT {self._READOUT_COLS} FROM readouts ORDER BY id DESC LIMIT 1").fetchone()
        else:
            row = self._con.execute(
                f"SELECT {self._READOUT_COLS} FROM readouts WHERE meter_id = ? ORDER BY id DESC LIMIT 1", (meter_id,)
            ).fetchone()
        return None if row is None else self._readout(row)

    def readouts(self, meter_id: str, since: datetime, until: datetime) -> list[StoredReadout]:
        rows = self._con.execute(
            f"SELECT {self._READOUT_COLS} FROM readouts WHERE meter_id = ? AND read_at >= ? AND read_at < ? "
            "ORDER BY read_at", (meter_id, _utc_text(since), _utc_text(until)),
        ).fetchall()
        return [self._readout(r) for r in rows]

    def readings_for(self, readout_id: int) -> list[StoredReading]:
        rows = self._con.execute(
            "SELECT seq, address, value, text, unit, meter_time, status FROM readings WHERE readout_id = ? "
            "ORDER BY seq", (readout_id,),
        ).fetchall()
        return [
            StoredReading(seq=r[0], address=r[1], value=_dec(r[2]), text=r[3], unit=r[4],
                          meter_time=None if r[5] is None else datetime.fromisoformat(r[5]), status=r[6])
            for r in rows
        ]

    def load_profile(self, meter_id: str, since: datetime, until: datetime) -> list[StoredInterval]:
        rows = self._con.execute(
            "SELECT start, address, value, unit, status FROM load_profile WHERE meter_id = ? AND start >= ? "
            "AND start < ? ORDER BY start, address", (meter_id, _utc_text(since), _utc_text(until)),
        ).fetchall()
        return [StoredInterval(start=datetime.fromisoformat(r[0]), address=r[1], value=_dec(r[2]), unit=r[3],
                               status=r[4]) for r in rows]

    def count_readouts(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM readouts").fetchone()[0])
