"""A throwaway PostgreSQL server from Debian's packages, for the tests and the benchmark.

``initdb`` and ``pg_ctl`` run as the ``postgres`` user (the server refuses root) in a fresh
directory, listening on a Unix socket in that directory only: no TCP port, nothing outside.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.tools import missing


def bindir() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def require_postgresql() -> Path:
    found = bindir()
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        found = None
    if found is None or os.geteuid() != 0:
        missing("the PostgreSQL server (Debian's postgresql package) or root")
    return found


def _as_postgres(*argv: str) -> None:
    done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()[-500:]}")


@contextmanager
def temporary_cluster(bin_dir: Path) -> Iterator[str]:
    """Start a server; yield its URL (``postgresql://postgres@/postgres?host=<socket dir>``)."""
    base = Path(tempfile.mkdtemp(prefix="smgw-pg-"))
    owner = pwd.getpwnam("postgres")
    os.chown(base, owner.pw_uid, owner.pw_gid)
    data, log = base / "data", base / "server.log"
    try:
        _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                     "-E", "UTF8", "--locale", "C")
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                     "-o", f"-c listen_addresses='' -k {base} -c max_connections=40", "start")
        try:
            yield f"postgresql://postgres@/postgres?host={base}"
        finally:
            _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
