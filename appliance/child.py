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

SETPRIV = shutil.which("setpriv")


def dying_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGTERM when the forking thread of this process ends."""
    if SETPRIV is None:  # not on Debian: the child may outlive a killed supervisor
        return argv
    return [SETPRIV, "--pdeathsig", "TERM", "--", *argv]
