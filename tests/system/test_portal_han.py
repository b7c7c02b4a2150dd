"""The portal as it runs on a gateway: an unprivileged user, the store read-only, TLS from a
production server, reachable from the HAN and from nowhere else (ARCHITECTURE §1, §6)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

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


def test_portal_serves_the_han_only_as_an_unprivileged_reader(tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        missing("setpriv (util-linux)")
    with make_testbed(tmp_path, "modern") as bed:
        with bed.config.open("a") as config:
            config.write(f"\n[firewall]\nportal_port = {PORT}\n")
        applied = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert applied.returncode == 0, applied.stderr
        # a world-traversable place (pytest's tmp is root-only): the store root-owned, 0644
        work = Path(tempfile.mkdtemp(prefix="smgw-portal-"))
        try:
            work.chmod(0o755)
            settings = portalkit.build(work, days=2, port=PORT)
            doc = json.loads(settings.read_text())
            doc["listen"]["address"] = GW_HAN
            doc["tls"] = {"cert": str(work / "portal-state" / "portal.crt"),
                          "key": str(work / "portal-state" / "portal.key")}
            settings.write_text(json.dumps(doc))
            store = work / "smgw.db"
            for path in (store, settings, *work.glob("run/*")):
                path.chmod(0o644)
            (work / "run").chmod(0o755)
            state = work / "portal-state"
            state.mkdir(mode=0o700)
            os.chown(state, NOBODY, NOBODY)
            before = hashlib.sha256(store.read_bytes()).hexdigest()
            env = {**bed.env, "HOME": str(state)}
            server = bed.lab.popen("gw", "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                   "--inh-caps=-all", "--bounding-set=-all", SMGW[0], "-m", "portal",
                                   "--settings", str(settings), env=env, stderr=subprocess.PIPE)
            try:
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
                uid = next(line for line in Path(f"/proc/{_child_pid(server.pid)}/status").read_text().splitlines()
                           if line.startswith("Uid:"))
                assert uid.split()[1:3] == [str(NOBODY), str(NOBODY)], uid
                # from the WAN: neither the WAN address nor the HAN address answers
                for address in (GW_WAN, GW_HAN):
                    wan = _fetch(bed, "wan", f"https://{address}:{PORT}/login")
                    assert wan.returncode != 0, f"portal reachable from the WAN at {address}: {wan.stdout}"
            finally:
                server.terminate()
                server.wait(10)
            # the portal wrote only its own database; the store is byte for byte what it was
            assert (state / "portal.db").stat().st_uid == NOBODY
            assert hashlib.sha256(store.read_bytes()).hexdigest() == before
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _child_pid(pid: int) -> int:
    """``ip netns exec`` and ``setpriv`` exec in place: the pid is the portal's own."""
    return pid
