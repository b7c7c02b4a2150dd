"""Child processes that die with their parent.

When a supervisor is killed (SIGKILL, OOM), the processes it started must not live on: an
orphaned openvpn keeps its tun device and management socket, and the restarted supervisor
could then neither start the tunnel again nor talk to the old one. Linux's
``PR_SET_PDEATHSIG`` sends the child SIGTERM when the thread that forked it ends.

It is set by ``setpriv --pdeathsig`` (util-linux, always on Debian) in the child, which then
execs the real program (the setting survives exec). Not by a Python ``preexec_fn``: Python
code between fork and exec can deadlock on a lock another thread held at the fork, which is
what happened with ``gateway run --in-process`` (three threads) now and then.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence

SETPRIV = shutil.which("setpriv")


def dying_with_parent(argv: list[str], privileges: Sequence[str] = ()) -> list[str]:
    """``argv`` run so that it gets SIGTERM when the forking thread of this process ends, with
    ``privileges`` (more ``setpriv`` options: another user, fewer capabilities) applied in the
    same ``setpriv``, which sets the signal after changing ids (a change of ids clears it)."""
    if SETPRIV is None:
        if privileges:
            raise RuntimeError("setpriv (util-linux) is missing: cannot start a part as another user")
        return argv  # not on Debian: the child may outlive a killed supervisor
    return [SETPRIV, "--pdeathsig", "TERM", *privileges, "--", *argv]


def end_all(procs: Sequence[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM to every child still running (the last started first), then one shared grace
    period for all of them; whoever is still there after it is killed."""
    running = [p for p in reversed(procs) if p.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
