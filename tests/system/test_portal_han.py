"""The portal as it runs on a gateway: an unprivileged user, the store read-only, TLS from a
production server, reachable from the HAN and from nowhere else (ARCHITECTURE §1, §6)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests import portalkit
from tests.system.conftest import SMGW
from tests.system.testbed import make_testbed
from tests.tools import missing

GW_WAN, GW_HAN = "192.0.2.2", "192.168.7.1"
PORT = 4443
NOBODY = 65534
FETCH = """
import ssl, sys, urllib.request
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    with urllib.request.urlopen(sys.argv[1], context=ctx, timeout=3) as r:
        print(r.status, r.headers.get("Content-Security-Policy", "")); print(r.read().decode()[:4000])
except Exception as exc:
    print("failed", type(exc).__name__, exc); sys.exit(1)
"""


def _fetch(bed, role: str, url: str):  # type: ignore[no-untyped-def]
    return bed.lab.run(role, SMGW[0], "-c", FETCH, url, timeout=20)


@contextmanager
def _portal_world(tmp_path: Path) -> Iterator[tuple[Any, Path, Path]]:
    """The netns testbed with a store and ``portal.json`` in a world-traversable folder
    (pytest's tmp is root-only): (bed, work folder, settings)."""
    with make_testbed(tmp_path, "modern") as bed:
        with bed.config.open("a") as config:
            config.write(f"\n[firewall]\nportal_port = {PORT}\n")
        applied = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert applied.returncode == 0, applied.stderr
        work = Path(tempfile.mkdtemp(prefix="smgw-portal-"))
        try:
            work.chmod(0o755)
            settings = portalkit.build(work, days=2, port=PORT)
            doc = json.loads(settings.read_text())
            doc["listen"]["address"] = GW_HAN
            doc["tls"] = {"cert": str(work / "portal-state" / "portal.crt"),
                          "key": str(work / "portal-state" / "portal.key")}
            settings.write_text(json.dumps(doc))
            for path in (settings, *work.glob("run/*")):
                path.chmod(0o644)
            (work / "run").chmod(0o755)
            yield bed, work, settings
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _serves_han_only(bed: Any, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        han = _fetch(bed, "han", f"https://{GW_HAN}:{PORT}/login")
        if han.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    if han.returncode != 0:
        server.terminate()
        raise AssertionError(f"{han.stdout}{han.stderr}; portal said: {server.communicate(10)[1].decode()}")
    assert han.stdout.startswith("200 ") and "default-src 'none'" in han.stdout
    assert 'name="csrf"' in han.stdout
    # from the WAN: neither the WAN address nor the HAN address answers
    for address in (GW_WAN, GW_HAN):
        wan = _fetch(bed, "wan", f"https://{address}:{PORT}/login")
        assert wan.returncode != 0, f"portal reachable from the WAN at {address}: {wan.stdout}"


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


def test_portal_serves_the_han_only_as_an_unprivileged_reader(tmp_path: Path) -> None:
    """As systemd's unit starts it: already its own user (here setpriv, as User= does)."""
    if shutil.which("setpriv") is None:
        missing("setpriv (util-linux)")
    with _portal_world(tmp_path) as (bed, work, settings):
        store = work / "smgw.db"
        store.chmod(0o644)
        state = work / "portal-state"
        state.mkdir(mode=0o700)
        os.chown(state, NOBODY, NOBODY)
        before = hashlib.sha256(store.read_bytes()).hexdigest()
        env = {**bed.env, "HOME": str(state)}
        server = bed.lab.popen("gw", "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                               "--inh-caps=-all", "--bounding-set=-all", SMGW[0], "-m", "portal",
                               "--settings", str(settings), env=env, stderr=subprocess.PIPE)
        try:
            _serves_han_only(bed, server)
            uid = _status(_child_pid(server.pid))["Uid"]
            assert uid.split()[0:2] == [str(NOBODY), str(NOBODY)], uid
        finally:
            server.terminate()
            server.wait(10)
        # the portal wrote only its own database; the store is byte for byte what it was
        assert (state / "portal.db").stat().st_uid == NOBODY
        assert hashlib.sha256(store.read_bytes()).hexdigest() == before


def test_portal_started_as_root_becomes_its_user_before_serving(tmp_path: Path) -> None:
    """As ``smgw gateway run`` as root starts it: root binds the port, then the portal becomes
    ``[portal] user`` for good. It gets its own folder (left root's by an earlier run), reads
    the store through the store's group, and keeps no capability and no way back."""
    with _portal_world(tmp_path) as (bed, work, settings):
        store = work / "smgw.db"
        store.chmod(0o640)  # root's alone for now
        state = work / "portal-state"
        state.mkdir(mode=0o755)  # an earlier run as root left the folder and a file in it
        (state / "left-by-root").write_text("x")
        before = hashlib.sha256(store.read_bytes()).hexdigest()
        doc = json.loads(settings.read_text())
        python, extra = _python_for_nobody()
        env = {**bed.env, **extra, "HOME": str(state)}
        for user, why in (("no-such-user", "does not exist"), ("root", "is root"), ("nobody", "cannot read the store")):
            refused = bed.lab.run("gw", *python, "-m", "portal", "--settings", str(_with_user(settings, doc, user)),
                                  env=env, timeout=30)
            assert refused.returncode == 2 and why in refused.stderr, refused.stderr
        os.chown(store, 0, NOBODY)  # the store's group is the portal user's, as group smgw is on a gateway
        server = bed.lab.popen("gw", *python, "-m", "portal", "--settings", str(_with_user(settings, doc, "nobody")),
                               env=env, stderr=subprocess.PIPE)
        try:
            _serves_han_only(bed, server)
            status = _status(_child_pid(server.pid))
            assert status["Uid"].split() == [str(NOBODY)] * 4, status["Uid"]
            assert status["Gid"].split() == [str(NOBODY)] * 4, status["Gid"]
            assert status["Groups"].split() == [str(NOBODY)], status["Groups"]
            assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
        finally:
            server.terminate()
            server.wait(10)
        assert state.stat().st_uid == NOBODY and state.stat().st_mode & 0o777 == 0o700
        for name in ("left-by-root", "portal.db", "portal.key", "portal.crt"):
            assert (state / name).stat().st_uid == NOBODY, name
        assert hashlib.sha256(store.read_bytes()).hexdigest() == before


def _python_for_nobody() -> tuple[list[str], dict[str, str]]:
    """An interpreter whose installation stays readable once the portal is nobody (the portal
    checks this and refuses otherwise). Debian's python3 is; a pyenv build under /root (0700)
    is not, and there the venv's packages run on Debian's python3, the same 3.11."""
    stdlib = sysconfig.get_paths()["stdlib"]
    readable = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                               "test", "-r", stdlib, "-a", "-x", stdlib], check=False).returncode == 0
    if readable:
        return [sys.executable], {}
    root = Path(__file__).resolve().parents[2]
    return ["/usr/bin/python3"], {"PYTHONPATH": f"{root}:{sysconfig.get_paths()['purelib']}"}


def _with_user(settings: Path, doc: dict[str, Any], user: str) -> Path:
    path = settings.with_name(f"portal-{user}.json")
    path.write_text(json.dumps({**doc, "user": user}))
    path.chmod(0o644)
    return path


def _child_pid(pid: int) -> int:
    """``ip netns exec`` and ``setpriv`` exec in place: the pid is the portal's own."""
    return pid
