"""Child processes that die with their parent.

When a supervisor is killed (SIGKILL, OOM), the processes it started must not live on: an
orphaned openvpn keeps its tun device and management socket, and the restarted supervisor
could then neither start the tunnel again nor talk to the old one. Linux's
``PR_SET_PDEATHSIG`` sends the child SIGTERM when the thread that forked it ends; the
function below sets it between fork and exec (``preexec_fn``) and closes the race where the
parent died before that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl  # bound before any fork


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: SIGTERM to the child when this process's forking thread ends."""
    parent = os.getpid()

    def preexec() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent is already gone: do not start at all
            os._exit(1)

    return preexec
