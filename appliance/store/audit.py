"""The audit-log table: append a sealed row, read rows back, prune behind a checkpoint.

Appending reads the log's last MAC and inserts the next row inside one ``BEGIN IMMEDIATE``
transaction, so two processes writing the same log (the core and the GateWatcher) take
turns and never fork the chain. The MAC function is called under that lock; with a token it
is one HMAC in the token, well under a millisecond.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime

from appliance.audit_chain import (
    CHECKPOINT_EVENT,
    ChainRow,
    MacFunction,
    canonical_detail,
    content,
    genesis,
    seal,
)
from appliance.store.codec import utc_text
from appliance.store.records import Row
from appliance.store.transaction import immediate

COLUMNS = "id, log, seq, at, event, consumer, detail, prev_mac, mac"


def _row(r: Row) -> ChainRow:
    return ChainRow(id=r[0], log=r[1], seq=r[2], at=r[3], event=r[4], consumer=r[5], detail=r[6],
                    prev_mac=bytes(r[7]), mac=bytes(r[8]))


def _append(con: sqlite3.Connection, log: str, at: datetime, event: str, consumer: str | None,
            detail: Mapping[str, object], mac: MacFunction) -> int:
    last = con.execute("SELECT seq, mac FROM audit_log WHERE log = ? ORDER BY seq DESC LIMIT 1", (log,)).fetchone()
    seq, prev = (int(last[0]) + 1, bytes(last[1])) if last else (1, genesis(log))
    at_text, detail_text = utc_text(at, "at"), canonical_detail(detail)
    con.execute(f"INSERT INTO audit_log ({COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
                (log, seq, at_text, event, consumer, detail_text, prev,
                 seal(prev, content(log, at_text, event, consumer, detail_text), mac)))
    return seq


def append(con: sqlite3.Connection, log: str, at: datetime, event: str, consumer: str | None,
           detail: Mapping[str, object], mac: MacFunction) -> int:
    """Seal and append one row in its own transaction; returns its ``seq``."""
    with immediate(con):
        return _append(con, log, at, event, consumer, detail, mac)


def append_in_transaction(con: sqlite3.Connection, log: str, at: datetime, event: str,
                          consumer: str | None, detail: Mapping[str, object], mac: MacFunction) -> int:
    """The same inside a transaction the caller holds (an ack and its consumer-log row commit together)."""
    return _append(con, log, at, event, consumer, detail, mac)


def rows(con: sqlite3.Connection, log: str, *, since: datetime | None = None, consumer: str | None = None,
         limit: int | None = None) -> list[ChainRow]:
    """A log's rows in ``seq`` order, optionally from a time on and for one consumer."""
    where, params = ["log = ?"], [log]
    if since is not None:
        where.append("at >= ?")
        params.append(utc_text(since, "since"))
    if consumer is not None:
        where.append("consumer = ?")
        params.append(consumer)
    sql = f"SELECT {COLUMNS} FROM audit_log WHERE {' AND '.join(where)} ORDER BY seq"
    if limit is not None:
        sql += f" LIMIT {int(limit):d}"
    return [_row(r) for r in con.execute(sql, params).fetchall()]


def last(con: sqlite3.Connection, log: str, event: str, consumer: str | None) -> ChainRow | None:
    """The newest row of ``event`` (for one consumer, if given)."""
    sql = f"SELECT {COLUMNS} FROM audit_log WHERE log = ? AND event = ?"
    params: list[object] = [log, event]
    if consumer is not None:
        sql += " AND consumer = ?"
        params.append(consumer)
    found = con.execute(sql + " ORDER BY seq DESC LIMIT 1", params).fetchone()
    return _row(found) if found else None


def prune(con: sqlite3.Connection, log: str, before: datetime, now: datetime, mac: MacFunction) -> int:
    """Delete the rows older than ``before`` and append a checkpoint naming the last one's MAC.

    The checkpoint goes in first, so the chain from it back to the anchor stays whole in
    every committed state; the delete and the checkpoint commit together. Returns how many
    rows went (0 appends nothing).
    """
    cutoff = utc_text(before, "before")
    with immediate(con):
        # rows are appended in time order (one clock per gateway), so "older" is a seq prefix;
        # the newest row always stays, the chain needs something to hang on
        found = con.execute(
            "SELECT max(seq), count(*), min(at), max(at) FROM audit_log WHERE log = ? AND at < ? "
            "AND seq < (SELECT max(seq) FROM audit_log WHERE log = ?)", (log, cutoff, log)).fetchone()
        if not found or found[0] is None:
            return 0
        through, count, oldest, newest = int(found[0]), int(found[1]), str(found[2]), str(found[3])
        anchor = con.execute("SELECT mac FROM audit_log WHERE log = ? AND seq = ?", (log, through)).fetchone()[0]
        _append(con, log, now, CHECKPOINT_EVENT, None,
                {"through_seq": through, "anchor": bytes(anchor).hex(), "rows": count,
                 "from": oldest, "to": newest}, mac)
        con.execute("DELETE FROM audit_log WHERE log = ? AND seq <= ?", (log, through))
    return count
