"""What the portal reads from the gateway's store: read-only, one meter at a time.

Every function takes meter ids the caller has already checked against the logged-in
consumer; none accepts a consumer-chosen id unchecked. Queries use the store's indexes
(readings by meter, address and time; load profile by meter and start), so a year view is
a few dozen index seeks whatever the number of raw readings.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

NOW_ADDRESSES = ("1.8.0", "1.8.1", "1.8.2", "2.8.0")
POWER_PHASES = ("21.7.0", "41.7.0", "61.7.0")


def open_read_only(path: Path) -> sqlite3.Connection:
    """The store, read-only by the OS's open mode and by ``query_only`` as well."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: the gateway's store does not exist (yet)")
    if sqlite3.threadsafety != 3:  # shared by threads: needs SQLite's serialized mode
        raise RuntimeError("this SQLite is not built thread-safe (serialized)")
    con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, check_same_thread=False, timeout=5)
    con.execute("PRAGMA query_only = ON")
    con.execute("PRAGMA cache_size = -512")  # 512 KiB per connection: the memory budget is the portal's
    return con


def _t(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Register:
    address: str
    value: Decimal
    unit: str | None


@dataclass(frozen=True, slots=True)
class Now:
    read_at: str
    registers: tuple[Register, ...]
    power_kw: Decimal | None


def now(con: sqlite3.Connection, meter: str) -> Now | None:
    row = con.execute("SELECT id, read_at FROM readouts WHERE meter_id = ? AND integrity = 'ok' "
                      "ORDER BY read_at DESC LIMIT 1", (meter,)).fetchone()
    if row is None:
        return None
    seen: dict[str, Register] = {}
    for address, value, unit in con.execute("SELECT address, value, unit FROM readings WHERE readout_id = ? "
                                            "AND value IS NOT NULL ORDER BY seq", (row[0],)):
        seen.setdefault(address, Register(address, Decimal(value), unit))
    power = seen["1.7.0"].value if "1.7.0" in seen else None
    phases = [seen[a].value for a in POWER_PHASES if a in seen]
    if power is None and phases:
        power = sum(phases, Decimal(0))
    return Now(row[1], tuple(seen[a] for a in NOW_ADDRESSES if a in seen), power)


def register_at(con: sqlite3.Connection, meter: str, address: str, moment: datetime) -> Decimal | None:
    """The register's value in the last good reading at or before ``moment``."""
    row = con.execute("SELECT value FROM readings WHERE meter_id = ? AND address = ? AND read_at <= ? "
                      "AND integrity = 'ok' AND value IS NOT NULL ORDER BY read_at DESC LIMIT 1",
                      (meter, address, _t(moment))).fetchone()
    return Decimal(row[0]) if row else None


def consumption(con: sqlite3.Connection, meter: str, edges: Sequence[datetime], address: str = "1.8.0",
                now_utc: datetime | None = None) -> list[Decimal | None]:
    """Energy per bucket: the register's growth between consecutive edges. A bucket is None
    where a side has no reading (before the first reading, after the last one, in the future)."""
    values = [register_at(con, meter, address, edge) if now_utc is None or edge <= now_utc else None
              for edge in edges]
    if now_utc is not None:  # the running bucket: up to now
        for i in range(1, len(edges)):
            if edges[i - 1] <= now_utc < edges[i]:
                values[i] = register_at(con, meter, address, now_utc)
    out: list[Decimal | None] = []
    for before, after in itertools.pairwise(values):
        out.append(None if before is None or after is None else after - before)
    return out


def load_profile(con: sqlite3.Connection, meter: str, start: datetime, end: datetime,
                 address: str = "1.5") -> dict[str, Decimal]:
    """The meter's own 15-minute values (P.01) by UTC start text."""
    rows = con.execute("SELECT start, value FROM load_profile WHERE meter_id = ? AND start >= ? AND start < ? "
                       "AND address = ? AND value IS NOT NULL", (meter, _t(start), _t(end), address))
    return {r[0]: Decimal(r[1]) for r in rows}


@dataclass(frozen=True, slots=True)
class DeliveryEntry:
    at: str
    meter: str
    party: str
    profile: str
    window_from: str
    window_to: str
    what: str
    delivery_id: str


def deliveries(con: sqlite3.Connection, meters: Sequence[str], limit: int = 200,
               before_seq: int | None = None) -> list[tuple[int, DeliveryEntry]]:
    """The consumer log's delivery rows for these meters, newest first."""
    marks = ",".join("?" * len(meters))
    sql = (f"SELECT seq, at, consumer, detail FROM audit_log WHERE log = 'consumer' AND event = 'delivery.sent' "
           f"AND consumer IN ({marks})")
    params: list[object] = list(meters)
    if before_seq is not None:
        sql += " AND seq < ?"
        params.append(before_seq)
    sql += " ORDER BY seq DESC LIMIT ?"
    params.append(limit)
    out = []
    for seq, at, consumer, detail in con.execute(sql, params):
        doc = json.loads(detail)
        out.append((seq, DeliveryEntry(at, consumer, str(doc.get("party", "")), str(doc.get("profile", "")),
                                       str(doc.get("from", "")), str(doc.get("to", "")), str(doc.get("what", "")),
                                       str(doc.get("delivery_id", "")))))
    return out


@dataclass(frozen=True, slots=True)
class ExportRow:
    read_at: str
    address: str
    value: str
    unit: str


def readings(con: sqlite3.Connection, meter: str, start: datetime, end: datetime) -> Iterator[ExportRow]:
    """Every good numeric reading of the meter in [start, end), in time order (streamed)."""
    cursor = con.execute("SELECT read_at, address, value, unit FROM readings WHERE meter_id = ? AND read_at >= ? "
                         "AND read_at < ? AND integrity = 'ok' AND value IS NOT NULL ORDER BY read_at, seq",
                         (meter, _t(start), _t(end)))
    for read_at, address, value, unit in cursor:
        yield ExportRow(read_at, address, value, unit or "")


def readouts_after(con: sqlite3.Connection, meters: Sequence[str], after_id: int,
                   limit: int = 20) -> list[tuple[int, str, str]]:
    """New readouts (id, meter, read_at) for the live stream."""
    marks = ",".join("?" * len(meters))
    return [(int(r[0]), r[1], r[2]) for r in con.execute(
        f"SELECT id, meter_id, read_at FROM readouts WHERE id > ? AND meter_id IN ({marks}) "
        f"AND integrity = 'ok' ORDER BY id LIMIT ?", [after_id, *meters, limit])]


def last_readout_id(con: sqlite3.Connection) -> int:
    row = con.execute("SELECT max(id) FROM readouts").fetchone()
    return int(row[0] or 0)


def readout_registers(con: sqlite3.Connection, readout_id: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for address, value in con.execute("SELECT address, value FROM readings WHERE readout_id = ? "
                                      "AND value IS NOT NULL ORDER BY seq", (readout_id,)):
        out.setdefault(address, value)
    return out
