"""The headend's database layer: deliveries stored idempotently by their id.

One class, two engines chosen by URL: SQLite (``sqlite:////path``, the default: one file, WAL,
several ingest processes take turns on the write lock) and PostgreSQL (``postgresql://...``
through psycopg 3, for a data center where several headends share one database). The SQL is
the same for both except the placeholder. A delivery and its values go in one transaction;
a second copy of the same delivery id stores nothing (the ingest refuses it naming the id,
which the gateway takes as its acknowledgement). The ingest
keeps no state of its own beyond this, which is what lets several instances share one
PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

from headend.document import Delivery

log = logging.getLogger("smgw.headend")

TABLES = (
    """CREATE TABLE IF NOT EXISTS deliveries (
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
    )""",
    """CREATE TABLE IF NOT EXISTS delivery_values (
        delivery_id TEXT NOT NULL REFERENCES deliveries (delivery_id),
        subject TEXT NOT NULL,
        address TEXT NOT NULL,
        unit TEXT NOT NULL,
        period_from TEXT NOT NULL,
        period_to TEXT NOT NULL,
        value TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS values_by_subject ON delivery_values (subject, period_from)",
    # nothing looks values up by delivery (a delivery's own row answers that) or deletes a
    # delivery, so this index cost a third of every insert for nothing; older stores lose it
    "DROP INDEX IF EXISTS values_by_delivery",
)
INSERT_DELIVERY = ("INSERT INTO deliveries VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) "
                   "ON CONFLICT (delivery_id) DO NOTHING")
INSERT_VALUE = "INSERT INTO delivery_values VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})"


LOCK_WAIT_S = 30.0  #: how long a SQLite writer waits for the write lock before the ingest answers 503


class HeadendStoreError(Exception):
    pass


class WriteLockBusy(HeadendStoreError):
    """SQLite's write lock is another ingest process's just now; nothing was done (see
    ``store_many(wait=False)``)."""


@lru_cache(maxsize=8192)
def _utc(moment: dt.datetime) -> str:
    """``2026-11-25T10:00:00Z``; isoformat is C and ten times faster than strftime, and a
    document's times are whole seconds in UTC (the parser admits nothing else). Cached: a
    fleet sends the same quarter hours all day, and one interval's end is the next one's
    start (equal instants in other zones share the entry, rightly: the text is UTC)."""
    if moment.tzinfo is not dt.UTC:  # parsed times are UTC already: skip the conversion
        moment = moment.astimezone(dt.UTC)
    return moment.isoformat()[:19] + "Z"


def engine(url: str) -> str:
    """``sqlite`` or ``postgresql``; the rest of the URL never goes into a message (it may hold a password)."""
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith("postgresql://"):
        return "postgresql"
    raise HeadendStoreError(f"database: {url.split(':', 1)[0]!r} is neither sqlite:/// nor postgresql://")


class HeadendStore:
    def __init__(self, url: str) -> None:
        self.engine = engine(url)
        self._lock = threading.Lock()  # one connection, shared by the ingest loop and the read API's threads
        self._con: Any
        if self.engine == "sqlite":
            path = Path(url[len("sqlite:///"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            # SQLite's busy handler only while the store is set up (workers starting together
            # take turns on the journal mode and the schema); then none: it sleeps 1, 2, 5, 10
            # .. 100 ms between tries, which turns two ingest processes taking turns on the
            # write lock into milliseconds of idling each (_begin retries every half millisecond
            # instead, and the ingest loop does other work meanwhile)
            self._con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=LOCK_WAIT_S)
            self._con.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged delivery leaves the gateway's outbox, so the commit that
            # precedes the acknowledgement must survive a power cut, not only a crash (NORMAL
            # in WAL mode may lose the last commits). A batch (see store_many) pays its
            # fsync once for all of its deliveries.
            self._con.execute("PRAGMA synchronous=FULL")
            # the foreign key stays declared (PostgreSQL enforces it) but SQLite does not check
            # it on every value row: values are only ever inserted in the transaction that
            # inserted their delivery (see store), and nothing deletes a delivery
            self._p = "?"
        else:
            self._url = url
            self._con = self._connect()
            self._p = "%s"
        self._insert_delivery, self._insert_value = INSERT_DELIVERY.format(p=self._p), INSERT_VALUE.format(p=self._p)
        with self._transaction() as cur:
            if self.engine == "postgresql":  # workers starting together must not race on CREATE TABLE
                cur.execute("SELECT pg_advisory_xact_lock(62056)")
            for statement in TABLES:
                cur.execute(statement)
        if self.engine == "sqlite":
            self._con.execute("PRAGMA busy_timeout = 0")

    def _connect(self) -> Any:
        import psycopg  # only a PostgreSQL headend needs the driver loaded

        try:
            return psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise HeadendStoreError(f"PostgreSQL: cannot connect: {type(exc).__name__}") from None

    def _usable(self) -> Any:
        """The connection, made again if the server dropped it (restart, failover, idle kill):
        the request that found it broken got a 503, the next one gets a fresh connection."""
        if self.engine == "postgresql" and (self._con.closed or self._con.broken):
            self._con = self._connect()
        return self._con

    @contextmanager
    def _transaction(self, *, wait: bool = True) -> Iterator[Any]:
        """BEGIN (IMMEDIATE on SQLite: take the write lock now) ... COMMIT, ROLLBACK on error.
        A database error becomes ``HeadendStoreError`` (the ingest answers 503: try again)."""
        with self._lock, self._errors():
            cur = self._usable().cursor()
            try:
                self._begin(cur, wait)
            except BaseException:
                cur.close()
                raise
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                with suppress(Exception):
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise HeadendStoreError(f"SQLite: {exc}") from None
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                raise HeadendStoreError(f"PostgreSQL: {type(exc).__name__}") from None
            raise

    def _begin(self, cur: Any, wait: bool = True) -> None:
        if self.engine == "postgresql":  # no lock on the whole database to wait for
            cur.execute("BEGIN")
            return
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                cur.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                if not wait:
                    raise WriteLockBusy("SQLite: the write lock is taken") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.0005)

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._errors():
            cur = self._usable().cursor()
            try:
                cur.execute(sql.format(p=self._p), params)
                return list(cur.fetchall())
            finally:
                cur.close()

    def close(self) -> None:
        self._con.close()

    def store(self, delivery: Delivery, received_at: str) -> bool:
        """True if stored now, False if this delivery id was stored before (idempotent)."""
        return self.store_many([(delivery, received_at)])[0]

    def store_many(self, batch: Sequence[tuple[Delivery, str]], *, wait: bool = True) -> list[bool]:
        """Each (delivery, received_at) stored in one transaction; per delivery, True if
        stored now, False if its id was stored before (a second copy in the same batch
        included). All or nothing: on ``HeadendStoreError`` none of them is stored, and the
        ingest answers each sender 503, so none is acknowledged before its commit.

        The ingest loop hands in every delivery that arrived while it worked on the last
        batch (a group commit): one BEGIN/COMMIT, one fsync and, on SQLite, one turn on the
        write lock the ingest processes share, serve them all. It asks with ``wait=False``:
        while another process holds that lock it gets ``WriteLockBusy`` at once, goes on
        verifying what arrives meanwhile, and asks again with a bigger batch.
        """
        with self._transaction(wait=wait) as cur:
            return [self._insert(cur, delivery, received_at) for delivery, received_at in batch]

    def _insert(self, cur: Any, delivery: Delivery, received_at: str) -> bool:
        cur.execute(self._insert_delivery, (
            delivery.delivery_id, delivery.gateway, delivery.subject, delivery.identity, delivery.party,
            delivery.profile, delivery.resolution, _utc(delivery.window_from), _utc(delivery.window_to),
            _utc(delivery.created_at), received_at))
        fresh = bool(cur.rowcount == 1)
        if fresh:  # a second copy of the same id (a retry racing the first) in one batch stores nothing
            cur.executemany(self._insert_value, [
                (delivery.delivery_id, delivery.subject, v.address, v.unit, _utc(v.start), _utc(v.end),
                 None if v.value is None else str(v.value)) for v in delivery.values])
        return fresh

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM deliveries")[0][0])

    def value_count(self) -> int:
        return int(self._query("SELECT count(*) FROM delivery_values")[0][0])

    def delivery_ids(self) -> list[str]:
        return [str(r[0]) for r in self._query("SELECT delivery_id FROM deliveries")]

    def readings(self, subject: str, since: str, until: str) -> list[dict[str, object]]:
        rows = self._query(
            "SELECT address, unit, period_from, period_to, value, delivery_id FROM delivery_values "
            "WHERE subject = {p} AND period_from >= {p} AND period_from < {p} ORDER BY period_from, address",
            (subject, since, until))
        return [{"address": a, "unit": u, "from": f, "to": t, "value": v, "delivery_id": d} for a, u, f, t, v, d in rows]

    def delivery(self, delivery_id: str) -> dict[str, object] | None:
        rows = self._query("SELECT delivery_id, gateway, subject, profile, window_from, window_to, received_at "
                           "FROM deliveries WHERE delivery_id = {p}", (delivery_id,))
        if not rows:
            return None
        keys = ("delivery_id", "gateway", "subject", "profile", "window_from", "window_to", "received_at")
        return dict(zip(keys, rows[0], strict=True))


def dumps(data: object) -> bytes:
    return json.dumps(data, sort_keys=True).encode()
