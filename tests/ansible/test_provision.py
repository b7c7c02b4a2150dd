"""``ansible-playbook site.yml`` against the lab fleet (ISSUE 10): the first run provisions the CA,
a market party's headend and two gateways, with every gateway key born in its token; the
provisioned gateways then deliver through their tunnels to the headend; a second run changes
nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

from appliance.lab import Lab
from tests.ansible.fleet import BIN, Run, build, playbook, release
from tests.system.conftest import ROOT, SMGW
from tests.system.testbed import require_tools
from tests.tools import missing

GATEWAYS = {"gw1": ("gw", "gw-0001"), "gw2": ("gw2", "gw-0002")}


def _ok(run: Run) -> None:
    assert run.returncode == 0, run.output[-5000:]
    assert set(run.recap) == {"ca", "dso", "gw1", "gw2"}, run.recap
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in run.recap.values()), run.recap


def _private_keys_under(folder: Path, skip: tuple[Path, ...]) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not any(path.is_relative_to(s) for s in skip):
            try:
                if b"PRIVATE KEY" in path.read_bytes():
                    found.append(path)
            except OSError:
                pass
    return found


def _delivered(db: Path) -> set[str]:
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return {row[0] for row in con.execute("SELECT DISTINCT gateway FROM deliveries")}
    except sqlite3.OperationalError:  # the ingest has not made its tables yet
        return set()


def test_site_provisions_a_working_fleet_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    require_tools()
    if not (BIN / "ansible-playbook").exists():
        missing("ansible-playbook (pip install -e '.[dev]')")
    prefix = f"ans{os.getpid() % 1000}"
    root = tmp_path / "lab"
    archive = release(tmp_path / "smgw-src.tar.gz")
    log = tmp_path / "ansible.log"
    Lab.sweep(prefix)
    lab = build(prefix)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        first = playbook(root, prefix, archive, log)
        _ok(first)
        assert all(first.recap[h]["changed"] > 0 for h in ("ca", "dso", "gw1", "gw2")), first.recap

        # enrolment moved no private key: none on a gateway outside its token, only CSRs and
        # certificates at the CA and on the controller
        for host in GATEWAYS:
            gw = root / host
            assert _private_keys_under(gw, (gw / "var/lib/softhsm", gw / "opt")) == []
            listed = subprocess.run(
                [str(gw / "opt/smgw/venv/bin/smgw"), "token", "list", "--json", "--pin-file",
                 str(gw / "etc/smgw/token.pin")], env={**os.environ, "SOFTHSM2_CONF": str(gw / "etc/softhsm/softhsm2.conf")},
                capture_output=True, text=True, timeout=60, check=True)
            assert '"label": "gateway-sig"' in listed.stdout and '"label": "gateway-tls-dso"' in listed.stdout
            assert '"certificate": false' not in listed.stdout, listed.stdout
        assert {p.suffix for p in (root / "ca/var/lib/smgw-ca/requests").iterdir()} == {".csr", ".crt"}
        assert _private_keys_under(root / "exchange", ()) == []

        # the provisioned fleet works: the party's server and ingest, the meters, the gateways
        dso = root / "dso"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs.append(lab.popen("dso", "openvpn", "--config",
                               str(dso / "var/lib/smgw-headend/rendered/openvpn/server.conf"),
                               "--log-append", str(tmp_path / "dso-server.log"), env=env))
        time.sleep(0.5)
        procs.append(lab.popen("dso", str(dso / "opt/smgw/venv/bin/smgw"), "headend", "run", "--config",
                               str(dso / "etc/smgw-headend/headend.toml"), env=env))
        for host, (ns, _) in GATEWAYS.items():
            gw = root / host
            procs.append(subprocess.Popen([*SMGW, "meter-sim", "--link", str(gw / "meter"), "--scenario", "normal"],
                                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 15
            while not (gw / "meter").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            procs.append(lab.popen(ns, str(gw / "opt/smgw/venv/bin/smgw"), "gateway", "run", "--config",
                                   str(gw / "etc/smgw/gateway.toml"),
                                   env={**env, "SOFTHSM2_CONF": str(gw / "etc/softhsm/softhsm2.conf")}))
        db = dso / "var/lib/smgw-headend/ingest.db"
        wanted = {gid for _, gid in GATEWAYS.values()}
        deadline = time.monotonic() + 240
        while _delivered(db) != wanted and time.monotonic() < deadline:
            for p in procs:
                assert p.poll() is None, f"{p.args!r} exited with {p.returncode}"
            time.sleep(2)
        assert _delivered(db) == wanted, (tmp_path / "dso-server.log").read_text()[-3000:]

        # the second run, with the fleet running: nothing to change anywhere
        second = playbook(root, prefix, archive, log)
        _ok(second)
        assert all(r["changed"] == 0 for r in second.recap.values()), second.recap
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        lab.close()
