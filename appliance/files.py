"""Writing a file so that a reader never sees half of it: a temporary file beside it, its
mode set before it is visible, then one rename. The temporary name carries the process and
thread, so two writers of the same file (the core and the self-test timer, two supervisors
in one process) never share one."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o640) -> None:
    """The temporary file is its owner's alone while it is written (a key written through
    here is never readable by others, not even for a moment), and gets ``mode`` before the rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # (a stale temporary file of the same name keeps its mode otherwise)
        with os.fdopen(fd, "w", closefd=False) as out:
            out.write(text)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    tmp.replace(path)
