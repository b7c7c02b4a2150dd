"""Initialise a SoftHSM2 token without a PIN on any command line.

python-pkcs11 does not wrap ``C_InitToken``, and ``softhsm2-util --init-token`` takes the
PINs as arguments (readable by every user in ``/proc/PID/cmdline``) unless it asks for them
on a terminal. So we give it a terminal: a pty whose other end only we hold, and type the
PINs at its prompts. A smart card in the field is initialised by its personalisation, not
by us; this is for the demo, the tests and SoftHSM2-based gateways.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pkcs11

from pki.token import DEFAULT_MODULE, TokenError, reinitialize

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_FAILED = re.compile(rb"ERROR[^\r\n]*")


def check_pin(pin: str, what: str) -> None:
    """PKCS#11 PINs here are 4..255 printable characters: a CR, LF or NUL would end the line early."""
    if not 4 <= len(pin) <= 255 or not pin.isprintable():
        raise TokenError(f"{what}: must be 4 to 255 printable characters (no CR, LF, NUL)")


def _exists(label: str, module: Path) -> bool:
    try:
        return any(True for _ in pkcs11.lib(str(module)).get_tokens(token_label=label))
    except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
        raise TokenError(f"PKCS#11 module {module}: {type(exc).__name__} {exc}".rstrip()) from None


def init_softhsm_token(label: str, so_pin: str, pin: str, *, module: Path = DEFAULT_MODULE,
                       util: str | None = None, timeout: float = 30.0) -> None:
    """``C_InitToken`` on the first free SoftHSM2 slot, then the user PIN, all typed into a pty.

    A second token under a label already in use is refused: every later lookup by label
    would then be ambiguous.
    """
    if not _LABEL.fullmatch(label):
        raise TokenError(f"token label {label!r}: 1-32 characters of A-Z a-z 0-9 . _ -, starting alphanumeric")
    check_pin(so_pin, "SO PIN")
    check_pin(pin, "user PIN")
    if "softhsm" not in module.name:
        raise TokenError(f"{module}: token init is for SoftHSM2 only; a smart card is initialised by its "
                         "personalisation")
    if _exists(label, module):
        raise TokenError(f"a token labelled {label!r} already exists")
    exe = util or shutil.which("softhsm2-util")
    if exe is None or not Path(exe).exists():
        raise TokenError("softhsm2-util not found (apt-get install softhsm2)")
    answers = [so_pin, so_pin, pin, pin]
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([exe, "--init-token", "--free", "--label", label], stdin=slave, stdout=slave,
                                stderr=slave, close_fds=True, start_new_session=True)
    finally:
        os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                raise TokenError(f"softhsm2-util did not finish within {timeout:.0f} s")
            ready, _, _ = select.select([master], [], [], min(remaining, 0.5))
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not chunk:
                break
            seen += chunk
            if seen.rstrip().endswith(b"PIN:") and answers:
                os.write(master, answers.pop(0).encode() + b"\n")
                seen = b""
    finally:
        os.close(master)
    code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    if code != 0:
        # the tool's own error line names the reason; PINs are never echoed by the pty (no-echo prompt)
        match = _FAILED.search(seen)
        reason = match.group(0).decode(errors="replace") if match else f"exit status {code}"
        raise TokenError(f"softhsm2-util could not initialise token {label}: {reason}")
    # SoftHSM2 reads its token directory at C_Initialize: without this, the token made by the
    # child stays invisible to this process (python-pkcs11 keeps one library per process)
    reinitialize(module)
