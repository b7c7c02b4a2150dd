"""The admin API's HTTPS: stunnel in front of the API's Unix socket, the key in the token.

Python's ``ssl`` can only load a private key from a file, and every gateway key lives in the
token (PKCS#11, non-extractable). stunnel with OpenSSL's PKCS#11 engine (Debian's
libengine-pkcs11-openssl) signs the handshake inside the token, as openvpn does for the
tunnels. It listens only on the admin tunnel's address while the tunnel is up, requires the
GWA's client certificate (chain to the pinned root, CRL, the configured GWA name) and hands
the plain request to the API's socket, which only this user can open.

Its config carries the token PIN (the engine takes it no other way), so it is written 0600
into ``<paths.run>`` and deleted as soon as stunnel listens.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.child import dying_with_parent
from appliance.errors import SmgwError

ENGINE_CANDIDATES = (Path("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"),
                     Path("/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so"),
                     Path("/usr/lib/arm-linux-gnueabihf/engines-3/pkcs11.so"))
_STUNNEL_SAFE = re.compile(r"[A-Za-z0-9._/:@+=-]+")


def stunnel_value(value: object) -> str:
    """A stunnel config value: stunnel does not quote, so only characters that cannot end,
    comment or extend a line, and never a space, ``;`` or ``#``."""
    text = str(value)
    if not _STUNNEL_SAFE.fullmatch(text):
        from appliance.render import RenderError  # loaded already: only a render calls this

        raise RenderError(f"value {text[:40]!r} cannot go into a stunnel config")
    return text


@dataclass(frozen=True, slots=True)
class TlsView:
    module: Path
    pin: str
    address: str
    port: int
    socket: Path
    cert: Path
    token_label: str
    key_label: str
    root: Path
    crl: Path
    gwa_name: str
    profile: str


def render(view: TlsView, templates: Path | None = None) -> str:
    """stunnel's config. The renderers (Jinja2, the templates, the firewall's) are loaded here,
    when a WakeUp opens the admin tunnel, not when the GateWatcher starts: most of a gateway's
    life has no admin tunnel, and in the in-process shape they would sit in the core."""
    try:
        from jinja2 import TemplateError

        from appliance.render import TEMPLATES, environment

        env = environment(templates or TEMPLATES)
        env.filters["stunnel"] = stunnel_value
        return env.get_template("stunnel-admin-api.conf.j2").render(t=view)
    except (ImportError, TemplateError) as exc:  # the admin API is refused and said so, the GateWatcher goes on
        raise SmgwError(f"cannot render stunnel's config: {type(exc).__name__}: {exc}") from None


class TlsFront:
    """One stunnel, started when the admin tunnel is up and stopped when it goes down."""

    def __init__(self, view: TlsView, run: Path) -> None:
        self.view = view
        self.conf = run / "admin-api-stunnel.conf"
        self.log = run / "admin-api-stunnel.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        if binary is None:
            raise SmgwError("stunnel is not installed (Debian package stunnel4): the admin API needs it")
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(render(self.view))
        try:
            with self.log.open("ab") as log_file:
                self.process = subprocess.Popen(dying_with_parent([binary, str(self.conf)]), stdout=log_file,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout_s
            while not self._listening():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SmgwError(f"stunnel for the admin API did not start; see {self.log}")
                time.sleep(0.02)
        finally:
            self.conf.unlink(missing_ok=True)  # the PIN lives on disk only while stunnel reads it

    def _listening(self) -> bool:
        try:
            with socket.create_connection((self.view.address, self.view.port), timeout=0.2):
                return True
        except OSError:
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.running():
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def engine_available() -> bool:
    return any(p.exists() for p in ENGINE_CANDIDATES)
