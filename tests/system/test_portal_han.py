"""The portal as it runs on a gateway: an unprivileged user, the store read-only, TLS from a
production server, reachable from the HAN and from nowhere else (ARCHITECTURE §1, §6)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from appliance.child import dying_with_parent
from appliance.errors import ConfigError
from appliance.portal_user import prepare_state_dir, resolve, setpriv_options
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
def _portal_world(tmp_path: Path, port: int = PORT) -> Iterator[tuple[Any, Path, Path]]:
    """The netns testbed with a store and ``portal.json`` in a world-traversable folder
    (pytest's tmp is root-only): (bed, work folder, settings)."""
    with make_testbed(tmp_path, "modern") as bed:
        with bed.config.open("a") as config:
            config.write(f"\n[firewall]\nportal_port = {port}\n")
        applied = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert applied.returncode == 0, applied.stderr
        work = Path(tempfile.mkdtemp(prefix="smgw-portal-"))
        try:
            work.chmod(0o755)
            settings = portalkit.build(work, days=2, port=port)
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


def _serves_han_only(bed: Any, server: subprocess.Popen[bytes], port: int = PORT) -> None:
    deadline = time.monotonic() + 20
    while True:
        han = _fetch(bed, "han", f"https://{GW_HAN}:{port}/login")
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
        wan = _fetch(bed, "wan", f"https://{address}:{port}/login")
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


SPAWN = """
import subprocess, sys
child = subprocess.Popen(sys.argv[1:], cwd="/")
print(child.pid, flush=True)
child.wait()
"""


def test_gateway_run_as_root_starts_the_portal_as_its_user_with_nothing_of_root(tmp_path: Path,
                                                                               portal_account: str) -> None:
    """As ``smgw gateway run`` as root starts it with ``[portal] user``: the same setpriv
    command line (``setpriv_options`` in ``dying_with_parent``), run by a parent as the
    supervisor runs it. Port 443, so binding needs the one capability it keeps."""
    port = 443
    with _portal_world(tmp_path, port) as (bed, work, settings):
        account = pwd.getpwnam(portal_account)
        uid, gid = account.pw_uid, account.pw_gid
        store = work / "smgw.db"
        os.chown(store, 0, gid)  # the store's group is the portal user's, as group smgw is on a gateway
        store.chmod(0o640)
        before = hashlib.sha256(store.read_bytes()).hexdigest()
        for name, why in (("no-such-user", "does not exist"), ("root", "is root"), ("nobody", "shared by other")):
            with pytest.raises(ConfigError, match=why):
                resolve(name, store)
        os.chown(work, uid, -1)  # the user that owns the store's folder is the core's, never the portal's
        with pytest.raises(ConfigError, match=f"owns {work}"):
            resolve(portal_account, store)
        os.chown(work, 0, -1)
        user = resolve(portal_account, store)
        theirs, roots = work / "theirs", work / "roots"  # folders the user or root made, and links to them
        for folder, owner in ((theirs, uid), (roots, 0)):
            folder.mkdir(mode=0o755)
            os.chown(folder, owner, gid)
            (work / f"link-{folder.name}").symlink_to(folder)
        for taken, why in ((work / "link-theirs", "link-theirs: (Not a directory|Too many levels)"),
                           (work / "link-roots", "link-roots: (Not a directory|Too many levels)"),
                           (roots, "belongs to uid 0")):  # root's, but not made now: perhaps full of links
            with pytest.raises(ConfigError, match=why):
                prepare_state_dir(taken, user)
        assert roots.stat().st_uid == 0 and theirs.stat().st_mode & 0o777 == 0o755
        prepare_state_dir(theirs, user)  # the user's own: kept, and made its alone
        assert theirs.stat().st_mode & 0o777 == 0o700
        state = work / "portal-state"
        prepare_state_dir(state, user)
        argv = dying_with_parent([SMGW[0], "-m", "portal", "--settings", str(settings)], setpriv_options(user, port))
        parent = bed.lab.popen("gw", SMGW[0], "-c", SPAWN, *argv,
                               env={**bed.env, "SMGW_TOKEN_PIN": "not-for-the-portal"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert parent.stdout is not None
            pid = int(parent.stdout.readline())
            _serves_han_only(bed, parent, port)
            status = _status(pid)
            assert status["Uid"].split() == [str(uid)] * 4, status["Uid"]
            assert status["Gid"].split() == [str(gid)] * 4, status["Gid"]
            assert status["Groups"].split() == [str(gid)], status["Groups"]
            bind_service = 1 << 10  # CAP_NET_BIND_SERVICE, and nothing else, in every set
            for key in ("CapPrm", "CapEff", "CapBnd", "CapAmb"):
                assert int(status[key], 16) == bind_service, (key, status[key])
            assert status["NoNewPrivs"].strip() == "1"
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not [e for e in environ if e.startswith(b"SMGW_")], environ
            assert os.readlink(f"/proc/{pid}/cwd") == "/"
            parent.kill()  # the supervisor dies: the portal goes with it (the parent-death signal survived the ids)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and _status(pid).get("State", "").split()[:1] != ["Z"]:
                assert time.monotonic() < deadline, "the portal outlived its supervisor"
                time.sleep(0.1)
        finally:
            parent.kill()
            parent.wait(10)
        assert state.stat().st_uid == uid and state.stat().st_mode & 0o777 == 0o700
        for name in ("portal.db", "portal.key", "portal.crt"):
            assert (state / name).stat().st_uid == uid, name
        assert hashlib.sha256(store.read_bytes()).hexdigest() == before


def _child_pid(pid: int) -> int:
    """``ip netns exec`` and ``setpriv`` exec in place: the pid is the portal's own."""
    return pid
