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
import sys
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


class ChildFailed(Exception):
    """An ``smgw`` child that could not be started or did not end in time; the message says
    which and why, in words for a log or a self-test detail."""


def run_smgw(args: Sequence[str], what: str, timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``smgw ARGS`` run to its end by this interpreter, for the checks that a long-running
    process hands to a short-lived one (pydantic, root-only listings). The caller reads the
    answer; this only says if there is none: ``ChildFailed("<what> took more than N s")``.
    cwd /: ``python -m`` would import first from the folder the caller was started in."""
    argv = [sys.executable, "-m", "appliance.cli", *args]
    try:
        if stdin is None:
            return subprocess.run(argv, capture_output=True, timeout=timeout, check=False, cwd="/",
                                  stdin=subprocess.DEVNULL)
        return subprocess.run(argv, capture_output=True, timeout=timeout, check=False, cwd="/", input=stdin)
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"{what} took more than {timeout:.0f} s") from None
    except OSError as exc:
        raise ChildFailed(f"cannot start {what}: {exc.strerror or exc}") from None


def last_said(done: subprocess.CompletedProcess[bytes], otherwise: str, limit: int = 300) -> str:
    """The child's last line on stderr (its error, or a traceback's last line), else ``otherwise``."""
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return (lines[-1] if lines else otherwise)[:limit]
