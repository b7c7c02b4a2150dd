"""Writing a file so that a reader never sees half of it: a temporary file beside it, its
mode set before it is visible, then one rename. The temporary name carries the process and
thread, so two writers of the same file (the core and the self-test timer, two supervisors
in one process) never share one."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o640) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
