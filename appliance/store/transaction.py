"""Explicit write transactions: all statements inside commit together or not at all.

The connection runs in autocommit mode (``isolation_level=None``) so that Python's sqlite3
never opens or commits a transaction behind our back; every write goes through
``immediate``. ``BEGIN IMMEDIATE`` takes the write lock up front (waiting up to the busy
timeout) instead of failing half-way when a read transaction would have to upgrade. If the
process dies before ``COMMIT``, the WAL holds no committed frames for it and the next open
sees the database as it was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress


@contextmanager
def immediate(con: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any exception, then re-raise it."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            # A failing ROLLBACK must not hide the error that caused it; SQLite rolls back
            # by itself when the connection closes.
            with suppress(sqlite3.Error):
                con.execute("ROLLBACK")
        raise
