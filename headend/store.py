"""The headend's database layer: deliveries stored idempotently by their id.

SQLite by default (``sqlite:////path``). The schema is plain SQL that PostgreSQL reads as
well; the PostgreSQL connection (``postgresql://``) arrives with the rest of ISSUE 6.
A delivery and its values go in one transaction; a second copy of the same delivery id is
acknowledged again and stored nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from headend.document import Delivery

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    gateway TEXT NOT NULL,
    subject TEXT NOT NULL,
    identity TEXT NOT NULL,
    party TEXT NOT NULL,
    profile TEXT NOT NULL,
    resolution INTEGER NOT NULL,
    window_from TEXT NOT NULL,
    window_to TEXT NOT NULL,
    created_at TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivery_values (
    delivery_id TEXT NOT NULL REFERENCES deliveries (delivery_id),
    subject TEXT NOT NULL,
    address TEXT NOT NULL,
    unit TEXT NOT NULL,
    period_from TEXT NOT NULL,
    period_to TEXT NOT NULL,
    value TEXT
);
CREATE INDEX IF NOT EXISTS values_by_subject ON delivery_values (subject, period_from);
"""


class HeadendStoreError(Exception):
    pass


def _utc(moment: object) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[attr-defined, no-any-return]


class HeadendStore:
    def __init__(self, url: str) -> None:
        if not url.startswith("sqlite:///"):
            raise HeadendStoreError(f"database {url.split(':', 1)[0]}: only sqlite:/// is built so far")
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute("PRAGMA foreign_keys=ON")
        self._con.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._con.close()

    def store(self, delivery: Delivery, received_at: str) -> bool:
        """True if stored now, False if this delivery id was stored before (idempotent)."""
        with self._lock:
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                cursor = con.execute(
                    "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (delivery_id) DO NOTHING",
                    (delivery.delivery_id, delivery.gateway, delivery.subject, delivery.identity, delivery.party,
                     delivery.profile, delivery.resolution, _utc(delivery.window_from), _utc(delivery.window_to),
                     _utc(delivery.created_at), received_at))
                fresh = cursor.rowcount == 1
                if fresh:
                    con.executemany("INSERT INTO delivery_values VALUES (?, ?, ?, ?, ?, ?, ?)", [
                        (delivery.delivery_id, delivery.subject, v.address, v.unit, _utc(v.start), _utc(v.end),
                         None if v.value is None else str(v.value)) for v in delivery.values])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return fresh

    def count(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT count(*) FROM deliveries").fetchone()[0])

    def readings(self, subject: str, since: str, until: str) -> list[dict[str, object]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT address, unit, period_from, period_to, value, delivery_id FROM delivery_values "
                "WHERE subject = ? AND period_from >= ? AND period_from < ? ORDER BY period_from, address",
                (subject, since, until)).fetchall()
        return [{"address": a, "unit": u, "from": f, "to": t, "value": v, "delivery_id": d} for a, u, f, t, v, d in rows]

    def delivery(self, delivery_id: str) -> dict[str, object] | None:
        with self._lock:
            row = self._con.execute("SELECT delivery_id, gateway, subject, profile, window_from, window_to, received_at "
                                    "FROM deliveries WHERE delivery_id = ?", (delivery_id,)).fetchone()
        if row is None:
            return None
        keys = ("delivery_id", "gateway", "subject", "profile", "window_from", "window_to", "received_at")
        return dict(zip(keys, row, strict=True))


def dumps(data: object) -> bytes:
    return json.dumps(data, sort_keys=True).encode()
