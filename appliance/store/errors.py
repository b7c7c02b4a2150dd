"""The store's errors, and the one place where SQLite's exceptions become ours.

``StoreError`` derives from the appliance root ``SmgwError`` (as the draft that ``gateway``
and ``demo`` already use did), so the CLI reports a store failure as one line and an exit
code instead of a traceback.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.errors import SmgwError


class StoreError(SmgwError):
    """The database cannot be opened, migrated, read or written as asked."""


class DuplicateReadoutError(StoreError):
    """A readout of this meter at this instant is already stored; nothing was written.

    Its own class so a caller that retries after a crash can tell "already there" from
    "could not store".
    """


@contextmanager
def sqlite_errors(path: Path, doing: str) -> Iterator[None]:
    """Turn ``sqlite3.Error`` into ``StoreError`` naming the file and what was being done."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {doing}: {exc}") from exc
