"""``ansible-playbook site.yml`` against the lab fleet (ISSUE 10): the first run provisions the CA,
a market party's headend and two gateways, with every gateway key born in its token; the
provisioned gateways then deliver through their tunnels to the headend, and the GWA wakes one
up and reaches its admin API through the admin tunnel; a second run changes nothing; a run with a renewal window longer than the certificates' life renews them all, for
the same keys."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.child import end_all
from appliance.demo_lab import FETCH
from appliance.lab import Lab
from tests.ansible.fleet import BIN, Run, build, playbook, release, unit_commands, unit_identity
from tests.system.conftest import ROOT, SMGW
from tests.system.testbed import require_tools
from tests.tools import missing

TUN = Path("/dev/net/tun")
GATEWAYS = {"gw1": ("gw", "gw-0001"), "gw2": ("gw2", "gw-0002")}


def _ok(run: Run) -> None:
    assert run.returncode == 0, run.output[-5000:]
    assert set(run.recap) == {"ca", "dso", "gw1", "gw2"}, run.recap
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in run.recap.values()), run.recap


READ = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX)
try:
    sock.connect(sys.argv[1])
except PermissionError:
    print("EACCES")
    sys.exit()
sock.sendall(b"GET /v1/meters/%s/readings HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n" % sys.argv[2].encode())
answer = b""
while chunk := sock.recv(65536):
    answer += chunk
head, _, body = answer.partition(b"\\r\\n\\r\\n")
print(head.split()[1].decode(), len(json.loads(body)))
"""


def _back_office_reads_through_the_socket_only_in_its_group(folder: Path, db: Path, base: Path) -> None:
    """The read socket's folder, as the role's tmpfiles.d rule makes it (a folder under /run is
    gone after a reboot, so the rule makes it at every boot): the headend's user, the readers'
    group, setgid; a user in that group reads, any other user cannot even reach the socket."""
    for above in folder.parents:  # the lab's stand-ins for / and /run are not all 0755 as on a host
        if above == base:
            break
        above.chmod(above.stat().st_mode | 0o001)
    rule = folder.parents[1] / "etc/tmpfiles.d/smgw-headend-reads.conf"
    assert f"d {folder} 2750 smgw smgw-reads -" in rule.read_text().splitlines()
    reads = grp.getgrnam("smgw-reads").gr_gid
    made = folder.stat()
    assert (made.st_uid, made.st_gid, made.st_mode & 0o7777) == (pwd.getpwnam("smgw").pw_uid, reads, 0o2750)
    sock = (folder / "reads.sock").stat()
    assert (sock.st_gid, sock.st_mode & 0o777) == (reads, 0o660), oct(sock.st_mode)
    with sqlite3.connect(db) as con:
        subject = con.execute("SELECT subject FROM delivery_values LIMIT 1").fetchone()[0]
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup"]
    proxy = subprocess.run([*nobody, "--groups=smgw-reads", sys.executable, "-c", READ, str(folder / "reads.sock"),
                            subject], check=False, capture_output=True, text=True, timeout=30)
    assert proxy.stdout.split()[:1] == ["200"] and int(proxy.stdout.split()[1]) > 0, proxy.stdout + proxy.stderr
    other = subprocess.run([*nobody, "--clear-groups", sys.executable, "-c", READ, str(folder / "reads.sock"),
                            subject], check=False, capture_output=True, text=True, timeout=30)
    assert other.stdout.strip() == "EACCES", other.stdout + other.stderr


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


def _token_keys(gw: Path) -> dict[str, dict[str, Any]]:
    listed = subprocess.run(
        [str(gw / "opt/smgw/venv/bin/smgw"), "token", "list", "--json", "--pin-file", str(gw / "etc/smgw/token.pin")],
        env={**os.environ, "SOFTHSM2_CONF": str(gw / "etc/softhsm/softhsm2.conf")},
        capture_output=True, text=True, timeout=60, check=True)
    return {k["label"]: k for k in json.loads(listed.stdout)}


def _last_event(log: Path, event: str) -> dict[str, object] | None:
    """The newest JSON line of ``event`` a service printed to its log."""
    found = None
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            found = doc
    return found


def _tails(*logs: Path) -> str:
    """The last lines of each log, for a failure message (CI keeps no temporary files)."""
    return "".join(f"\n--- {log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                   for log in logs if log.exists())


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
    # a short root: the gateways' management sockets must fit a Unix socket path (107 bytes),
    # which pytest's deep temporary folders would not leave room for (smgw check refuses them)
    base = Path(tempfile.mkdtemp(prefix="smgw-ans-"))
    base.chmod(0o755)  # the portal runs as its own user and must reach its files below
    root = base / "lab"
    archive = release(tmp_path / "smgw-src.tar.gz")
    log = tmp_path / "ansible.log"
    Lab.sweep(prefix)
    lab = build(prefix)
    procs: list[subprocess.Popen[bytes]] = []
    tun_mode = TUN.stat().st_mode & 0o777
    try:
        # the tunnel services open it as user smgw: 0666 as Debian's udev makes it (this machine
        # has no udev); TUNSETIFF then needs the CAP_NET_ADMIN their units hand them
        TUN.chmod(0o666)
        first = playbook(root, prefix, archive, log)
        _ok(first)
        assert all(first.recap[h]["changed"] > 0 for h in ("ca", "dso", "gw1", "gw2")), first.recap
        # a new release restarts what runs it (the services run the code they started with)
        for handler in ("smgw_gateway : Restart the gateway", "smgw_headend : Restart the headend",
                        "smgw_gwa : Restart the admin tunnel server", "smgw_install : Note the new smgw release"):
            assert f"RUNNING HANDLER [{handler}]" in first.output, handler
        # the units' users cannot write bytecode beside the code: the role compiled it, as root's
        for host in ("dso", *GATEWAYS):
            pyc = root / host / "opt/smgw/smgw/appliance/__pycache__" / f"gateway.{sys.implementation.cache_tag}.pyc"
            assert pyc.exists(), f"{host}: smgw was installed without its bytecode"
            assert (pyc.stat().st_uid, pyc.stat().st_mode & 0o022) == (0, 0), oct(pyc.stat().st_mode)

        # enrolment moved no private key: none on a gateway outside its token, only CSRs and
        # certificates at the CA and on the controller
        issued = {}
        for host in GATEWAYS:
            gw = root / host
            assert _private_keys_under(gw, (gw / "var/lib/softhsm", gw / "opt")) == []
            keys = _token_keys(gw)
            assert {"gateway-sig", "gateway-tls-dso"} <= set(keys), keys
            assert all(k["certificate"] and k["days_left"] > 300 for k in keys.values()), keys
            issued[host] = keys
        assert {p.suffix for p in (root / "ca/var/lib/smgw-ca/requests").iterdir()} == {".csr", ".crt"}
        assert _private_keys_under(root / "exchange", ()) == []

        # the provisioned fleet works, started from the units the roles installed: the party's
        # tunnel server and ingest, the meters (simulated), each gateway's core, tunnel and GateWatcher
        dso = root / "dso"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}

        def gateway_env(host: str) -> dict[str, str]:
            """A gateway service's environment: its token, no home (as its unit gives it)."""
            return {**env, "SOFTHSM2_CONF": str(root / host / "etc/softhsm/softhsm2.conf"), "HOME": "/nonexistent"}

        def start(ns: str, unit: Path, unit_env: dict[str, str], as_unit_user: bool = False) -> None:
            pre, command = unit_commands(unit)
            for argv in pre:
                assert lab.run(ns, *argv, env=unit_env).returncode == 0, argv
            if as_unit_user:
                command = [*unit_identity(unit), *command]
            with (tmp_path / f"{ns}-{unit.stem}.log").open("ab") as out:  # the child keeps its own handle
                procs.append(lab.popen(ns, *command, env=unit_env, stdout=out, stderr=subprocess.STDOUT))

        start("dso", dso / "etc/systemd/system/smgw-headend-tunnel.service", env)
        # (the ingest binds its tunnel address whether or not the server has made it yet)
        # root's folder (the server config and ruleset root's openvpn and nft load): the ingest writes only db/
        headend_state = (dso / "var/lib/smgw-headend").stat()
        assert (headend_state.st_uid, headend_state.st_mode & 0o022) == (0, 0), oct(headend_state.st_mode)
        # root's openvpn writes its client list in the run folder: the ingest reads it, writes nothing there
        headend_run = (dso / "run/smgw-headend").stat()
        assert (headend_run.st_uid, headend_run.st_mode & 0o7777) == (0, 0o750), oct(headend_run.st_mode)
        headend_unit = dso / "etc/systemd/system/smgw-headend.service"
        assert unit_identity(headend_unit)[1:3] == ["--reuid=smgw", "--regid=smgw"]
        start("dso", headend_unit, {**env, "HOME": "/nonexistent"}, as_unit_user=True)
        for host, (ns, _) in GATEWAYS.items():
            gw = root / host
            procs.append(subprocess.Popen([*SMGW, "meter-sim", "--link", str(gw / "meter"), "--scenario", "normal"],
                                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 15
            while not (gw / "meter").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            # the meter's port as udev hands a serial adapter out: group dialout, 0660
            pty = os.path.realpath(gw / "meter")
            os.chown(pty, 0, grp.getgrnam("dialout").gr_gid)
            os.chmod(pty, 0o660)
            # a boot: /run is empty, the installed tmpfiles.d rule makes the run folder for the units' user
            shutil.rmtree(gw / "run/smgw", ignore_errors=True)
            made = subprocess.run(["systemd-tmpfiles", "--create", str(gw / "etc/tmpfiles.d/smgw.conf")],
                                  capture_output=True, text=True, check=False)
            assert made.returncode == 0, made.stderr
            run_dir = (gw / "run/smgw").stat()
            assert (run_dir.st_uid, run_dir.st_gid, run_dir.st_mode & 0o7777) == (
                pwd.getpwnam("smgw").pw_uid, grp.getgrnam("smgw").gr_gid, 0o750)
            # the services run what apply rendered: from a folder only root may change, beside
            # the state folder user smgw owns
            rendered = (gw / "var/lib/smgw-rendered").stat()
            assert (rendered.st_uid, rendered.st_gid, rendered.st_mode & 0o7777) == (
                0, grp.getgrnam("smgw").gr_gid, 0o750)
            assert (gw / "var/lib/smgw-rendered/openvpn/dso.conf").stat().st_uid == 0
            assert not (gw / "var/lib/smgw/rendered").exists()
            units = gw / "etc/systemd/system"
            assert sorted(u.name for u in units.iterdir()) == [
                "smgw-core.service", "smgw-gatewatcher.service", "smgw-portal.service", "smgw-selftest.service",
                "smgw-selftest.timer", "smgw-tunnel-dso.service"]
            # each as its unit says: user smgw, its groups, only the capabilities it names
            for name in ("smgw-core.service", "smgw-tunnel-dso.service", "smgw-gatewatcher.service"):
                assert unit_identity(units / name)[1:3] == ["--reuid=smgw", "--regid=smgw"], name
                start(ns, units / name, gateway_env(host), as_unit_user=True)
        # the household portal on gw1, as its unit says: its own user, the store read through group smgw
        portal_unit = root / "gw1/etc/systemd/system/smgw-portal.service"
        assert unit_identity(portal_unit)[1:3] == ["--reuid=smgw-portal", "--regid=smgw-portal"]
        start("gw", portal_unit, {**env, "HOME": "/nonexistent"}, as_unit_user=True)
        portal = procs[-1]  # ip netns exec and setpriv exec in place: its pid is the portal's
        db = dso / "var/lib/smgw-headend/db/ingest.db"
        wanted = {gid for _, gid in GATEWAYS.values()}
        deadline = time.monotonic() + 240
        while _delivered(db) != wanted and time.monotonic() < deadline:
            for p in procs:
                assert p.poll() is None, f"{p.args!r} exited with {p.returncode}"
            time.sleep(2)
        assert _delivered(db) == wanted, _delivered(db)
        _back_office_reads_through_the_socket_only_in_its_group(dso / "run/smgw-reads", db, base)
        smgw_uid = str(pwd.getpwnam("smgw").pw_uid)
        # ip netns exec and setpriv exec in place: each pid is the service's own
        services = [p for p in procs if "--reuid=smgw" in p.args]
        assert len(services) == 1 + 3 * len(GATEWAYS)  # the ingest, and each gateway's three
        for proc in services:
            uid = next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                       if line.startswith("Uid:"))
            assert uid.split()[1:3] == [smgw_uid, smgw_uid], (proc.args, uid)
        # the self-tests the capability-less core cannot run (the ruleset), as the timer's unit runs them
        for host, (ns, _) in GATEWAYS.items():
            selftest = root / host / "etc/systemd/system/smgw-selftest.service"
            _, command = unit_commands(selftest)
            checked = lab.run(ns, *unit_identity(selftest), *command, "--json", timeout=60, env=gateway_env(host))
            assert checked.returncode == 0, checked.stdout + checked.stderr
            outcome = {c["name"]: c["ok"] for c in json.loads(checked.stdout)}
            assert "ruleset" in outcome and all(outcome.values()), outcome

        # the household reaches its portal from the HAN (its login from the inventory works), never from the WAN
        deadline = time.monotonic() + 60
        while True:
            han = lab.run("han", SMGW[0], "-c", FETCH, "https://192.168.7.1:443/login", env=env, timeout=15)
            if han.stdout.strip() == "200" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert han.stdout.strip() == "200", han.stdout + _tails(tmp_path / "gw-smgw-portal.log")
        wan = lab.run("wan", SMGW[0], "-c", FETCH, "https://192.0.2.2:443/login", env=env, timeout=15)
        assert wan.stdout.strip() != "200", "the portal answered the WAN"
        uid = next(line for line in Path(f"/proc/{portal.pid}/status").read_text().splitlines()
                   if line.startswith("Uid:"))
        assert uid.split()[1] == str(pwd.getpwnam("smgw-portal").pw_uid), uid
        portal_db = root / "gw1/var/lib/smgw-portal/portal.db"
        assert portal_db.stat().st_uid == pwd.getpwnam("smgw-portal").pw_uid

        # the GWA as provisioned: its admin tunnel server, a signed WakeUp to gw1, the admin API
        # inside the tunnel with the GWA's admin certificate, then a BreakUp
        gwa = root / "ca"
        pki = gwa / "etc/smgw-gwa/pki"
        start("gwa", gwa / "etc/systemd/system/smgw-gwa-tunnel.service", env)
        smgw_gwa = str(gwa / "opt/smgw/venv/bin/smgw")
        signer = ("--cert", str(pki / "wakeup.crt"), "--key", str(pki / "wakeup.key"))
        time.sleep(0.5)
        woken = lab.run("gwa", smgw_gwa, "admin", "wakeup", "--gateway", "gw-0001", "--to", "192.0.2.2:7500", *signer,
                        env=env)
        assert woken.returncode == 0, woken.stderr
        admin = ("--gateway", "gw-0001", "--cert", str(pki / "admin.crt"), "--key", str(pki / "admin.key"),
                 "--root", str(pki / "ca.crt"), "--crl", str(pki / "crl.pem"))
        deadline = time.monotonic() + 45
        while True:
            # the API's address inside the tunnel, as the GateWatcher announced it
            up = _last_event(tmp_path / "gw-smgw-gatewatcher.log", "admin-api-up")
            if up is not None:
                status = lab.run("gwa", smgw_gwa, "admin", "status", *admin, "--to", f"{up['address']}:{up['port']}",
                                 env=env, timeout=30)
            else:
                status = subprocess.CompletedProcess([], 1, "", "the GateWatcher announced no admin API")
            if status.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert status.returncode == 0, status.stderr + _tails(tmp_path / "gw-smgw-gatewatcher.log",
                                                             *(root / "gw1").rglob("admin-api-stunnel.log"))
        assert json.loads(status.stdout)["gateway"] == "gw-0001"
        assert lab.run("gwa", smgw_gwa, "admin", "breakup", "--gateway", "gw-0001", "--to", "192.0.2.2:7500",
                       *signer, env=env).returncode == 0

        # the second run, with the fleet running: nothing to change anywhere
        second = playbook(root, prefix, archive, log)
        _ok(second)
        assert all(r["changed"] == 0 for r in second.recap.values()), second.recap
        assert "RUNNING HANDLER" not in second.output  # the same release: nothing restarts

        # rotation: every certificate is due within a renewal window this long
        third = playbook(root, prefix, archive, log, "-e", "smgw_gateway_renew_days=100000",
                         "-e", "smgw_headend_renew_days=100000")
        _ok(third)
        assert third.recap["gw1"]["changed"] > 0 and third.recap["dso"]["changed"] > 0, third.recap
        for host in GATEWAYS:
            renewed = _token_keys(root / host)
            for label in ("gateway-sig", "gateway-tls-dso"):
                assert renewed[label]["id"] == issued[host][label]["id"]  # the same key in the token
                assert renewed[label]["not_after"] > issued[host][label]["not_after"]  # a new certificate
    finally:
        end_all(procs, 15)
        TUN.chmod(tun_mode)
        lab.close()
        shutil.rmtree(base, ignore_errors=True)
