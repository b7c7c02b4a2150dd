"""Opening the database file: permissions, pragmas, identity and schema version.

``synchronous=FULL`` in WAL mode makes every ``COMMIT`` durable before it returns, so a
readout the gateway has reported stored survives a power loss (``NORMAL`` could lose the
last transactions). The file holds meter data: the directory is created ``0750`` and the
file ``0640`` before SQLite touches it (SQLite gives ``-wal`` and ``-shm`` the same mode).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from appliance.store.errors import StoreError, sqlite_errors
from appliance.store.migrations import APPLICATION_ID, latest_version, migrate, user_version

DIR_MODE = 0o750
FILE_MODE = 0o640
BUSY_TIMEOUT_MS = 5000  #: a reader or a second writer waits this long for the lock


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """A configured connection to ``path``, migrated to the latest schema unless read-only.

    Read-only opens never create, convert or migrate anything: the demo's viewer and the
    portal must not race the gateway for the schema.
    """
    if not read_only:
        _create_file(path)
    with sqlite_errors(path, "cannot open the database"):
        if read_only:
            con = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                                  isolation_level=None)
        else:
            con = sqlite3.connect(path, isolation_level=None)
    try:
        with sqlite_errors(path, "cannot open the database"):
            _configure(con, path, read_only=read_only)
            version = _check_identity(con, path)
        if read_only:
            if version != latest_version():
                raise StoreError(f"{path}: schema version {version}, this smgw reads "
                                 f"{latest_version()}; open it writable once to migrate")
        else:
            migrate(con, path)
    except BaseException:
        con.close()
        raise
    return con


def _create_file(path: Path) -> None:
    """Create the parent directory (0750) and an empty database file (0640) if missing.

    Modes are set explicitly rather than left to the umask; an existing directory or file
    keeps its mode (the parent may be /var/lib or a test's temporary directory).
    """
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.chmod(path.parent, DIR_MODE)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return  # the file is there already (perhaps just created by another process)
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the database: {exc.strerror}") from exc
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def _configure(con: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
    """Per-connection settings; WAL is a property of the file and set by writers only."""
    con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    con.execute("PRAGMA foreign_keys = ON")
    if read_only:
        con.execute("PRAGMA query_only = ON")
        return
    mode = str(con.execute("PRAGMA journal_mode = WAL").fetchone()[0])
    if mode.lower() != "wal":
        raise StoreError(f"{path}: cannot switch to WAL mode (journal mode stays {mode!r})")
    con.execute("PRAGMA synchronous = FULL")
    # deleted rows are overwritten with zeros in the file (retention must really forget)
    con.execute("PRAGMA secure_delete = ON")


def _check_identity(con: sqlite3.Connection, path: Path) -> int:
    """The file's schema version, after making sure it is ours and not from a newer smgw."""
    version = user_version(con)
    if version == 0:
        tables = int(con.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()[0])
        if tables:
            raise StoreError(f"{path}: not an smgw database (it has {tables} schema objects "
                             "but no smgw schema version)")
        return 0
    application_id = int(con.execute("PRAGMA application_id").fetchone()[0])
    if application_id != APPLICATION_ID:
        raise StoreError(f"{path}: not an smgw database (application_id {application_id:#x})")
    if version > latest_version():
        raise StoreError(f"{path}: schema version {version} is newer than this smgw knows "
                         f"({latest_version()}); upgrade smgw or use a matching database")
    return version
