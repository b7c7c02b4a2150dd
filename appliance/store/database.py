"""``Store``: the gateway's local database, one SQLite file in WAL mode, one connection.

A readout is stored whole, in one transaction, or not at all: a kill -9 or power loss
between two statements leaves an uncommitted transaction that SQLite discards on the next
open. Values come back as the exact ``Decimal`` that went in; times as aware UTC datetimes.
One connection per ``Store`` and per thread that made it (sqlite3's default check).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Self

from appliance.audit_chain import ChainRow, MacFunction
from appliance.store import audit, writer
from appliance.store.codec import CodecError, parse_decimal, parse_utc, utc_text
from appliance.store.connection import connect
from appliance.store.errors import StoreError, sqlite_errors
from appliance.store.migrations import user_version
from appliance.store.records import (
    OutboxItem,
    Row,
    StoredInterval,
    StoredLogbookEntry,
    StoredReading,
    StoredReadout,
)
from appliance.store.transaction import immediate
from reader.models import Readout


class Store:
    """Readouts, readings, load profile and logbook of the meters this gateway reads."""

    def __init__(self, con: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
        """Use ``Store.open``; this only wraps an already configured connection."""
        self._con: sqlite3.Connection | None = con
        self.path = path
        self.read_only = read_only

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> Store:
        """Open (and create and migrate, unless ``read_only``) the database at ``path``."""
        return cls(connect(path, read_only=read_only), path, read_only=read_only)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; a second close does nothing."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._con

    def _query(self, doing: str, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        with sqlite_errors(self.path, doing):
            return list(self._db().execute(sql, params).fetchall())

    # -- writing -------------------------------------------------------------------------

    def save_readout(self, *, meter_id: str, readout: Readout, read_at: datetime,
                     integrity: str = "ok") -> int:
        """Store a readout with its readings, load profile and logbook in one transaction.

        Returns the new readout id. Raises ``DuplicateReadoutError`` (a ``StoreError``) if
        this meter already has a readout at ``read_at``, ``StoreError`` if anything else
        fails; in every failure case nothing of the readout is stored.
        """
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only, readout of meter {meter_id} "
                             "not stored")
        rows = writer.prepare(meter_id=meter_id, readout=readout, read_at=read_at,
                              integrity=integrity)
        con = self._db()
        doing = f"readout of meter {meter_id} at {rows.read_at} not stored"
        with sqlite_errors(self.path, doing), immediate(con):
            return writer.write(con, rows)

    def accept_wakeup(self, *, nonce: str, sequence: int, action: str, issued_at: datetime,
                      now: datetime) -> str | None:
        """Record an otherwise valid WakeUp/BreakUp unless it is a replay; returns the refusal
        reason, or None when recorded. Check and insert are one transaction, so two copies
        of a datagram racing each other cannot both pass."""
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only")
        con = self._db()
        with sqlite_errors(self.path, "checking the wake-up replay cache"), immediate(con):
            if con.execute("SELECT 1 FROM wakeup_replay WHERE nonce = ?", (nonce,)).fetchone():
                return f"replayed: nonce {nonce} was accepted before"
            last = con.execute("SELECT max(sequence) FROM wakeup_replay").fetchone()[0]
            if last is not None and sequence <= last:
                return f"replayed: sequence {sequence} is not above the last accepted {last}"
            con.execute("INSERT INTO wakeup_replay (nonce, sequence, action, issued_at, accepted_at) "
                        "VALUES (?, ?, ?, ?, ?)", (nonce, sequence, action, utc_text(issued_at, "issued_at"), utc_text(now, "accepted_at")))
        return None

    # -- outbox --------------------------------------------------------------------------

    def progress(self, profile: str) -> datetime | None:
        rows = self._query("reading profile progress", "SELECT done_until FROM profile_progress WHERE profile = ?",
                           (profile,))
        return parse_utc(rows[0][0]) if rows else None

    def set_progress(self, profile: str, done_until: datetime) -> None:
        con = self._db()
        with sqlite_errors(self.path, "writing profile progress"), immediate(con):
            con.execute("INSERT INTO profile_progress (profile, done_until) VALUES (?, ?) ON CONFLICT (profile) "
                        "DO UPDATE SET done_until = excluded.done_until", (profile, utc_text(done_until, "done_until")))

    def enqueue(self, *, delivery_id: str, party: str, profile: str, window: tuple[datetime, datetime],
                payload: bytes, summary: str, now: datetime, meter_id: str | None = None) -> None:
        """The sealed delivery into the outbox and the profile's progress past its window, in
        one transaction: a crash leaves either both or neither, so no window is sent twice
        or skipped."""
        con = self._db()
        start, end = utc_text(window[0], "window_from"), utc_text(window[1], "window_to")
        with sqlite_errors(self.path, f"queueing delivery {delivery_id}"), immediate(con):
            con.execute("INSERT INTO outbox (delivery_id, party, profile, window_from, window_to, payload, summary, "
                        "created_at, next_attempt_at, meter_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (delivery_id, party, profile, start, end, payload, summary, utc_text(now, "created_at"),
                         utc_text(now, "next_attempt_at"), meter_id))
            con.execute("INSERT INTO profile_progress (profile, done_until) VALUES (?, ?) ON CONFLICT (profile) "
                        "DO UPDATE SET done_until = excluded.done_until", (profile, end))

    def next_pending(self, party: str) -> OutboxItem | None:
        """The oldest unacknowledged delivery of a party: deliveries go out in order."""
        rows = self._query("reading the outbox", f"SELECT {OutboxItem.COLUMNS} FROM outbox "
                           "WHERE party = ? AND acked_at IS NULL AND refused_at IS NULL ORDER BY id LIMIT 1", (party,))
        return OutboxItem.from_row(rows[0]) if rows else None

    def pending_count(self, party: str | None = None) -> int:
        where, params = ("AND party = ?", (party,)) if party is not None else ("", ())
        return int(self._query("counting the outbox",
                               f"SELECT count(*) FROM outbox WHERE acked_at IS NULL AND refused_at IS NULL {where}",
                               params)[0][0])

    def delivery_failed(self, outbox_id: int, error: str, retry_at: datetime) -> None:
        con = self._db()
        with sqlite_errors(self.path, "recording a failed send"), immediate(con):
            con.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                        (error[:500], utc_text(retry_at, "next_attempt_at"), outbox_id))

    def retry_now(self, party: str, now: datetime) -> int:
        """Make a party's waiting deliveries due at once (its tunnel just came back up)."""
        con = self._db()
        with sqlite_errors(self.path, "rescheduling the outbox"), immediate(con):
            return con.execute("UPDATE outbox SET next_attempt_at = ? WHERE party = ? AND acked_at IS NULL "
                               "AND refused_at IS NULL "
                               "AND next_attempt_at > ?", (utc_text(now, "now"), party, utc_text(now, "now"))).rowcount

    def delivery_acked(self, delivery_id: str, at: datetime, mac: MacFunction | None = None) -> bool:
        """Mark acknowledged and, given ``mac``, write its consumer-log row in the same
        transaction (so a crash cannot leave a sent delivery the household never sees);
        False if it was acknowledged already (an idempotent ack logs nothing)."""
        con = self._db()
        with sqlite_errors(self.path, f"acknowledging {delivery_id}"), immediate(con):
            cursor = con.execute("UPDATE outbox SET acked_at = ?, attempts = attempts + 1 "
                                 "WHERE delivery_id = ? AND acked_at IS NULL", (utc_text(at, "acked_at"), delivery_id))
            if cursor.rowcount != 1:
                return False
            if mac is not None:
                row = con.execute("SELECT party, profile, window_from, window_to, summary, meter_id FROM outbox "
                                  "WHERE delivery_id = ?", (delivery_id,)).fetchone()
                audit.append_in_transaction(con, "consumer", at, "delivery.sent", row[5], {
                    "delivery_id": delivery_id, "party": row[0], "profile": row[1], "from": row[2], "to": row[3],
                    "what": row[4]}, mac)
            return True

    # -- retention -----------------------------------------------------------------------

    def prune_readings(self, before: datetime) -> dict[str, object]:
        """Delete readouts (with their readings), load-profile intervals and logbook events
        older than ``before``, in one transaction. A readout that brought a still-kept interval
        or event stays until they go. Returns counts and the period, never values."""
        cutoff = utc_text(before, "before")
        con = self._db()
        with sqlite_errors(self.path, "deleting expired readings"), immediate(con):
            period = con.execute("SELECT min(read_at), max(read_at) FROM readouts WHERE read_at < ?",
                                 (cutoff,)).fetchone()
            intervals = con.execute("DELETE FROM load_profile WHERE start < ?", (cutoff,)).rowcount
            events = con.execute("DELETE FROM logbook WHERE ts < ?", (cutoff,)).rowcount
            readings = con.execute(
                "SELECT count(*) FROM readings WHERE readout_id IN (SELECT id FROM readouts WHERE read_at < ? "
                "AND id NOT IN (SELECT readout_id FROM load_profile) AND id NOT IN (SELECT readout_id FROM logbook))",
                (cutoff,)).fetchone()[0]
            readouts = con.execute(
                "DELETE FROM readouts WHERE read_at < ? AND id NOT IN (SELECT readout_id FROM load_profile) "
                "AND id NOT IN (SELECT readout_id FROM logbook)", (cutoff,)).rowcount
        return {"readouts": readouts, "readings": int(readings), "intervals": intervals, "logbook_events": events,
                "from": period[0], "to": period[1]}

    def prune_outbox(self, profile: str, before: datetime) -> int:
        """Delete ``profile``'s deliveries acknowledged before ``before``; unacknowledged ones
        are never deleted (they have not reached their party yet)."""
        con = self._db()
        with sqlite_errors(self.path, "deleting expired deliveries"), immediate(con):
            cutoff = utc_text(before, "before")
            return con.execute("DELETE FROM outbox WHERE profile = ? AND (acked_at < ? OR refused_at < ?)",
                               (profile, cutoff, cutoff)).rowcount

    def outbox_profiles(self) -> list[str]:
        return [str(r[0]) for r in self._query("listing outbox profiles", "SELECT DISTINCT profile FROM outbox")]

    def truncate_wal(self) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes, so deleted rows do
        not live on in old WAL frames; False if a reader kept it from finishing (next time)."""
        with sqlite_errors(self.path, "checkpointing the WAL"):
            busy = self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return int(busy) == 0

    def delivery_refused(self, outbox_id: int, error: str, at: datetime, mac: MacFunction | None = None) -> None:
        """Take a delivery the headend refused for good out of the queue (the next one may go),
        and, given ``mac``, say so in the system log in the same transaction."""
        con = self._db()
        with sqlite_errors(self.path, "recording a refused delivery"), immediate(con):
            con.execute("UPDATE outbox SET refused_at = ?, last_error = ?, attempts = attempts + 1 WHERE id = ?",
                        (utc_text(at, "refused_at"), error[:500], outbox_id))
            if mac is not None:
                row = con.execute("SELECT delivery_id, party, profile, window_from, window_to FROM outbox "
                                  "WHERE id = ?", (outbox_id,)).fetchone()
                audit.append_in_transaction(con, "system", at, "delivery.refused", None, {
                    "delivery_id": row[0], "party": row[1], "profile": row[2], "from": row[3], "to": row[4],
                    "error": error[:300]}, mac)

    def refused_count(self, party: str | None = None) -> int:
        where, params = ("AND party = ?", (party,)) if party is not None else ("", ())
        return int(self._query("counting refused deliveries",
                               f"SELECT count(*) FROM outbox WHERE refused_at IS NOT NULL {where}", params)[0][0])

    # -- audit logs ----------------------------------------------------------------------

    def audit_append(self, log: str, at: datetime, event: str, consumer: str | None,
                     detail: Mapping[str, object], mac: MacFunction) -> int:
        """Seal and append one row to ``log``; returns its sequence number."""
        with sqlite_errors(self.path, f"writing the {log} log"):
            return audit.append(self._db(), log, at, event, consumer, detail, mac)

    def audit_rows(self, log: str, *, since: datetime | None = None, consumer: str | None = None,
                   limit: int | None = None) -> list[ChainRow]:
        with sqlite_errors(self.path, f"reading the {log} log"):
            return audit.rows(self._db(), log, since=since, consumer=consumer, limit=limit)

    def audit_last(self, log: str, event: str, consumer: str | None = None) -> ChainRow | None:
        with sqlite_errors(self.path, f"reading the {log} log"):
            return audit.last(self._db(), log, event, consumer)

    def audit_prune(self, log: str, before: datetime, now: datetime, mac: MacFunction) -> int:
        with sqlite_errors(self.path, f"pruning the {log} log"):
            return audit.prune(self._db(), log, before, now, mac)

    def register_samples(self, meter_id: str, address: str, since: datetime, until: datetime
                         ) -> list[tuple[datetime, Decimal]]:
        """Numeric values of one register, one per readout (its first occurrence), in time order.

        Only readouts whose integrity is ``ok``: one taken while the clock deviated
        (``clock-deviation``) has a time no party may bill by, so a delivery shows that
        interval empty rather than wrong; the calibration log says why."""
        rows = self._query(
            "reading register samples",
            "SELECT r.read_at, g.value FROM readings g JOIN readouts r ON r.id = g.readout_id "
            "WHERE g.meter_id = ? AND g.address = ? AND r.read_at >= ? AND r.read_at < ? AND g.value IS NOT NULL "
            "AND r.integrity = 'ok' "
            "AND g.seq = (SELECT min(seq) FROM readings WHERE readout_id = r.id AND address = g.address) "
            "ORDER BY r.read_at", (meter_id, address, *self._period(since, until)))
        out = []
        for at, value in rows:
            number = parse_decimal(value)
            if number is not None:
                out.append((parse_utc(at), number))
        return out

    # -- reading -------------------------------------------------------------------------

    def latest_readout(self, meter_id: str | None = None) -> StoredReadout | None:
        """The most recent readout of ``meter_id`` (of any meter if None), or None."""
        where, params = ("WHERE meter_id = ?", (meter_id,)) if meter_id is not None else ("", ())
        rows = self._query(
            "reading the latest readout",
            f"SELECT {StoredReadout.COLUMNS} FROM readouts {where} "
            "ORDER BY read_at DESC, id DESC LIMIT 1", params)
        return StoredReadout.from_row(rows[0]) if rows else None

    def readouts(self, meter_id: str, since: datetime, until: datetime) -> list[StoredReadout]:
        """Readouts of ``meter_id`` with ``since <= read_at < until``, oldest first."""
        rows = self._query(
            "reading readouts",
            f"SELECT {StoredReadout.COLUMNS} FROM readouts "
            "WHERE meter_id = ? AND read_at >= ? AND read_at < ? ORDER BY read_at, id",
            (meter_id, *self._period(since, until)))
        return [StoredReadout.from_row(row) for row in rows]

    def readings_for(self, readout_id: int) -> list[StoredReading]:
        """The readings of one readout in the meter's order (repeated addresses included)."""
        rows = self._query(
            "reading readings",
            f"SELECT {StoredReading.COLUMNS} FROM readings WHERE readout_id = ? ORDER BY seq",
            (readout_id,))
        return [StoredReading.from_row(row) for row in rows]

    def count_readouts(self, meter_id: str | None = None) -> int:
        """How many readouts are stored (of ``meter_id``, or of all meters)."""
        where, params = ("WHERE meter_id = ?", (meter_id,)) if meter_id is not None else ("", ())
        rows = self._query("counting readouts", f"SELECT COUNT(*) FROM readouts {where}", params)
        return int(rows[0][0])

    def load_profile(self, meter_id: str, since: datetime, until: datetime) -> list[StoredInterval]:
        """Load-profile values of periods starting in ``[since, until)``, by start then column."""
        rows = self._query(
            "reading the load profile",
            f"SELECT {StoredInterval.COLUMNS} FROM load_profile "
            "WHERE meter_id = ? AND start >= ? AND start < ? ORDER BY start, rowid",
            (meter_id, *self._period(since, until)))
        return [StoredInterval.from_row(row) for row in rows]

    def logbook(self, meter_id: str, since: datetime, until: datetime) -> list[StoredLogbookEntry]:
        """Logbook events with ``since <= timestamp < until``, oldest first."""
        rows = self._query(
            "reading the logbook",
            f"SELECT {StoredLogbookEntry.COLUMNS} FROM logbook "
            "WHERE meter_id = ? AND ts >= ? AND ts < ? ORDER BY ts, rowid",
            (meter_id, *self._period(since, until)))
        return [StoredLogbookEntry.from_row(row) for row in rows]

    def logbook_brought_by(self, readout_id: int) -> list[StoredLogbookEntry]:
        """The events this readout added (re-read ones belong to the readout that brought them first)."""
        rows = self._query("reading the logbook", f"SELECT {StoredLogbookEntry.COLUMNS} FROM logbook "
                           "WHERE readout_id = ? ORDER BY ts, rowid", (readout_id,))
        return [StoredLogbookEntry.from_row(row) for row in rows]

    # -- health --------------------------------------------------------------------------

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"``, or SQLite's findings, one per line."""
        rows = self._query("checking integrity", "PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)

    def quick_check(self) -> str:
        """``PRAGMA quick_check``: like ``integrity_check`` without the index cross-check, so
        it stays in seconds on a year of readings (the periodic self-test)."""
        rows = self._query("checking integrity", "PRAGMA quick_check")
        return "\n".join(str(row[0]) for row in rows)

    def schema_version(self) -> int:
        """The schema version recorded in the file (``PRAGMA user_version``)."""
        with sqlite_errors(self.path, "reading the schema version"):
            return user_version(self._db())

    def _period(self, since: datetime, until: datetime) -> tuple[str, str]:
        try:
            return utc_text(since, "since"), utc_text(until, "until")
        except CodecError as exc:
            raise StoreError(f"{self.path}: {exc}") from None
