"""Schema migrations, in order. ``PRAGMA user_version`` records the last one applied.

Adding a table later is one more entry here; each runs in its own transaction.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE readouts (
            id INTEGER PRIMARY KEY,
            meter_id TEXT NOT NULL,
            read_at TEXT NOT NULL,
            identification TEXT NOT NULL,
            integrity TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            UNIQUE (meter_id, read_at)
        );
        CREATE TABLE readings (
            readout_id INTEGER NOT NULL REFERENCES readouts(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            meter_id TEXT NOT NULL,
            address TEXT NOT NULL,
            value TEXT,
            text TEXT NOT NULL,
            unit TEXT,
            meter_time TEXT,
            read_at TEXT NOT NULL,
            status TEXT,
            integrity TEXT NOT NULL,
            PRIMARY KEY (readout_id, seq)
        );
        CREATE INDEX readings_meter_address_time ON readings (meter_id, address, read_at);
        CREATE INDEX readouts_meter_time ON readouts (meter_id, read_at);
        CREATE TABLE load_profile (
            meter_id TEXT NOT NULL,
            start TEXT NOT NULL,
            address TEXT NOT NULL,
            value TEXT,
            unit TEXT,
            status TEXT NOT NULL,
            readout_id INTEGER NOT NULL REFERENCES readouts(id) ON DELETE CASCADE,
            UNIQUE (meter_id, start, address)
        );
        CREATE TABLE logbook (
            meter_id TEXT NOT NULL,
            ts TEXT NOT NULL,
            status TEXT NOT NULL,
            values_json TEXT NOT NULL,
            readout_id INTEGER NOT NULL REFERENCES readouts(id) ON DELETE CASCADE,
            UNIQUE (meter_id, ts, status)
        );
        """,
    ),
]

LATEST = MIGRATIONS[-1][0]
