"""The schema, as an ordered list of migrations; ``PRAGMA user_version`` records the last applied.

Adding a table later (outbox, deliveries, logs, replay cache) is one more ``Migration`` at the
end of ``MIGRATIONS`` with the next version number; never edit one that has shipped. Each
migration runs in its own ``BEGIN IMMEDIATE`` transaction together with the version bump, so
a crash mid-migration leaves the previous version intact (SQLite's DDL is transactional).

Tables are ``STRICT`` so a column holds only its declared type; decimal values are TEXT (see
``codec``). Foreign keys: readings belong to their readout (``ON DELETE CASCADE``); a
load-profile interval or logbook entry only records which readout brought it first, so
deleting that readout is refused until a retention policy decides what happens to them.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from appliance.store.errors import sqlite_errors
from appliance.store.transaction import immediate

#: ``PRAGMA application_id`` of an smgw database ("SMGW"), so a foreign SQLite file that
#: someone points ``store.path`` at is refused instead of getting our tables added.
APPLICATION_ID = 0x534D4757


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``sql`` may hold several statements separated by ``;``."""

    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "readouts, readings, load profile, logbook",
        """
        CREATE TABLE readouts (
            id INTEGER PRIMARY KEY,
            meter_id TEXT NOT NULL,
            read_at TEXT NOT NULL,              -- UTC, codec.utc_text
            identification TEXT NOT NULL,       -- the meter's sign-on line
            integrity TEXT NOT NULL,            -- 'ok' or why not
            attempts INTEGER NOT NULL,
            UNIQUE (meter_id, read_at)          -- also serves "latest readout of a meter"
        ) STRICT;
        CREATE INDEX readouts_by_time ON readouts (read_at);

        CREATE TABLE readings (
            readout_id INTEGER NOT NULL REFERENCES readouts (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,               -- order within the readout; addresses may repeat
            meter_id TEXT NOT NULL,
            address TEXT NOT NULL,
            value TEXT,                         -- exact decimal text, NULL if not a number
            text TEXT NOT NULL,                 -- the value as the meter sent it
            unit TEXT,
            meter_time TEXT,                    -- UTC, from a second bracket
            read_at TEXT NOT NULL,
            status TEXT,                        -- 'ERROR', 'empty' or NULL
            integrity TEXT NOT NULL,
            extra_json TEXT NOT NULL DEFAULT '[]',  -- further brackets, kept not dropped
            PRIMARY KEY (readout_id, seq)
        ) STRICT;
        CREATE INDEX readings_by_meter_time ON readings (meter_id, read_at);
        CREATE INDEX readings_by_meter_address_time ON readings (meter_id, address, read_at);

        CREATE TABLE load_profile (
            meter_id TEXT NOT NULL,
            start TEXT NOT NULL,                -- UTC start of the period
            address TEXT NOT NULL,
            value TEXT,
            unit TEXT,
            status TEXT NOT NULL,
            readout_id INTEGER NOT NULL REFERENCES readouts (id),
            UNIQUE (meter_id, start, address)   -- an overlapping re-read adds only new intervals
        ) STRICT;
        CREATE INDEX load_profile_by_readout ON load_profile (readout_id);

        CREATE TABLE logbook (
            meter_id TEXT NOT NULL,
            ts TEXT NOT NULL,
            status TEXT NOT NULL,
            values_json TEXT NOT NULL,
            readout_id INTEGER NOT NULL REFERENCES readouts (id),
            UNIQUE (meter_id, ts, status)
        ) STRICT;
        CREATE INDEX logbook_by_readout ON logbook (readout_id);
        """,
    ),
    Migration(
        2,
        "wake-up replay cache",
        """
        CREATE TABLE wakeup_replay (
            nonce TEXT PRIMARY KEY,             -- 32 hex digits, never accepted twice
            sequence INTEGER NOT NULL,          -- accepted sequences only ever grow
            action TEXT NOT NULL,
            issued_at TEXT NOT NULL,            -- UTC, as signed
            accepted_at TEXT NOT NULL           -- UTC, gateway clock
        ) STRICT;
        CREATE INDEX wakeup_replay_by_sequence ON wakeup_replay (sequence);
        """,
    ),
    Migration(
        3,
        "outbox and profile progress",
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,             -- creation order: sent in this order per party
            delivery_id TEXT NOT NULL UNIQUE,
            party TEXT NOT NULL,
            profile TEXT NOT NULL,
            window_from TEXT NOT NULL,          -- UTC
            window_to TEXT NOT NULL,            -- UTC
            payload BLOB NOT NULL,              -- CMS EnvelopedData(SignedData(document)): nothing in clear
            summary TEXT NOT NULL,              -- for the consumer log: addresses, resolution, no values
            created_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT,
            acked_at TEXT                       -- set only when the headend acknowledged the id
        ) STRICT;
        CREATE INDEX outbox_pending ON outbox (party, id) WHERE acked_at IS NULL;

        CREATE TABLE profile_progress (
            profile TEXT PRIMARY KEY,
            done_until TEXT NOT NULL            -- UTC end of the last window turned into a delivery
        ) STRICT;
        """,
    ),
    Migration(
        4,
        "audit logs (system, calibration, consumer), hash-chained; outbox meter",
        """
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            log TEXT NOT NULL CHECK (log IN ('system', 'calibration', 'consumer')),
            seq INTEGER NOT NULL,               -- per log, 1, 2, 3 ...; the chain is the truth
            at TEXT NOT NULL,                   -- UTC, gateway clock
            event TEXT NOT NULL,
            consumer TEXT,                      -- whose entry (consumer log): the meter id
            detail TEXT NOT NULL,               -- canonical JSON (audit_chain.canonical_detail)
            prev_mac BLOB NOT NULL,
            mac BLOB NOT NULL,                  -- audit_chain.seal(prev_mac, content)
            UNIQUE (log, seq)
        ) STRICT;
        CREATE INDEX audit_log_by_time ON audit_log (log, at);
        ALTER TABLE outbox ADD COLUMN meter_id TEXT;  -- whose data: the consumer-log row names them
        CREATE INDEX audit_log_by_consumer ON audit_log (consumer, at) WHERE consumer IS NOT NULL;
        -- append-only for the code; an attacker with the file drops this, the chain still tells
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
        BEGIN
            SELECT RAISE(ABORT, 'audit log rows are append-only');
        END;
        """,
    ),
    Migration(
        5,
        "outbox: deliveries the headend refused for good (4xx) leave the queue",
        """
        ALTER TABLE outbox ADD COLUMN refused_at TEXT;  -- a 4xx that sending again cannot change
        DROP INDEX outbox_pending;
        CREATE INDEX outbox_pending ON outbox (party, id) WHERE acked_at IS NULL AND refused_at IS NULL;
        """,
    ),
)


def latest_version() -> int:
    """The schema version this code writes (read at call time, so tests can add a step)."""
    return MIGRATIONS[-1].version if MIGRATIONS else 0


def check_order(migrations: tuple[Migration, ...]) -> None:
    """Versions must run 1, 2, 3, ... with no gap, or ``user_version`` would mean nothing."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(f"migration {migration.version} out of order, expected {expected}")


def statements(sql: str) -> list[str]:
    """Split a script at the ``;`` that end statements (not those inside a trigger body).

    ``executescript`` would do the splitting but commits any open transaction first, which
    would break "one migration, one transaction". Pieces holding only comments are dropped.
    """
    found: list[str] = []
    pending = ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if _has_code(pending):
                found.append(pending.strip())
            pending = ""
    if _has_code(pending):
        raise ValueError(f"incomplete SQL statement: {pending.strip()[:60]!r}")
    return found


def _has_code(text: str) -> bool:
    """False for whitespace, semicolons and comments only (errs towards True)."""
    without = re.sub(r"--[^\n]*|/\*.*?\*/", "", text, flags=re.DOTALL)
    return bool(without.strip(" \t\r\n;"))


def user_version(con: sqlite3.Connection) -> int:
    """The schema version recorded in the file (0 for a new, empty database)."""
    return int(con.execute("PRAGMA user_version").fetchone()[0])


def migrate(con: sqlite3.Connection, path: Path) -> int:
    """Apply the missing migrations, each in its own transaction; return the final version.

    The version is read again under the write lock, so two processes opening a new file at
    once do not both run a step.
    """
    check_order(MIGRATIONS)
    with sqlite_errors(path, "reading the schema version"):
        if user_version(con) >= latest_version():
            return user_version(con)  # the common case takes no write lock
    for migration in MIGRATIONS:
        doing = f"migration {migration.version} ({migration.description})"
        with sqlite_errors(path, doing), immediate(con):
            if user_version(con) < migration.version:
                for statement in statements(migration.sql):
                    con.execute(statement)
                con.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
                con.execute(f"PRAGMA user_version = {migration.version:d}")
    return user_version(con)
