"""``smgw gateway run`` supervises the tunnels and the GateWatcher as child processes: a part
killed with SIGKILL comes back after a delay, its tunnels reconnect, the system log says so,
and stopping the core stops every part."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from appliance.tunnel_states import read_states
from tests.system.conftest import SMGW, Simulator
from tests.system.test_deliveries import _start_headends
from tests.system.test_portal_han import _status
from tests.system.testbed import PARTIES, Bed, make_testbed


def _children(pid: int) -> dict[str, int]:
    """``{"tunnels": pid, "gatewatcher": pid, "portal": pid}`` among the direct children of ``pid``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
            continue
        for part in ("tunnels", "gatewatcher"):
            if part.encode() in cmdline and b"run" in cmdline:
                found[part] = int(entry.name)
        if cmdline[1:3] == [b"-m", b"portal"]:
            found["portal"] = int(entry.name)
    return found


def _connected(run: Path) -> dict[str, int]:
    """``{tunnel: openvpn pid}`` of the CONNECTED tunnels, as the supervisor last wrote them."""
    return {t["name"]: t["pid"] for t in read_states(run) if t["state"] == "CONNECTED"}


def _stop(core: subprocess.Popen[bytes], servers: list[subprocess.Popen[bytes]]) -> None:
    core.send_signal(signal.SIGTERM)
    core.wait(timeout=30)
    for proc in servers:
        proc.terminate()
        proc.wait(timeout=10)


def _meter_and_portal(bed: Bed, sim: Simulator, portal: str = "") -> None:
    """The testbed's config with the simulated meter read every second and the portal on 443."""
    root = bed.root
    bed.config.write_text(f'[meter]\nport = "{sim.link}"\npoll_interval = 1\ntimeout = 5\nattempts = 2\n'
                          + bed.config.read_text() + '\n[firewall]\nportal_port = 443\n'
                          + f'[portal]\n{portal}state_dir = "{root}/portal"\ntls_cert = "{root}/portal/portal.crt"\n'
                            f'tls_key = "{root}/portal/portal.key"\n')


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_gateway_run_restarts_a_killed_part(tmp_path: Path, meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("normal")
    with make_testbed(tmp_path, "modern") as bed:
        bed.config.write_text(f'[meter]\nport = "{sim.link}"\npoll_interval = 1\ntimeout = 5\nattempts = 2\n'
                              + bed.config.read_text())
        applied = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert applied.returncode == 0, applied.stderr
        servers = _start_headends(bed)
        run = bed.root / "run"
        core = bed.lab.popen("gw", *SMGW, "gateway", "run", "--config", str(bed.config), env=bed.env)
        try:
            assert _wait(lambda: set(_children(core.pid)) == {"tunnels", "gatewatcher"}, 20), _children(core.pid)
            assert _wait(lambda: set(_connected(run)) == set(PARTIES), 30), read_states(run)
            before, openvpn = _children(core.pid), _connected(run)
            os.kill(before["tunnels"], signal.SIGKILL)
            # its openvpn processes die with it (no orphan holds the tun device or the socket) ...
            assert _wait(lambda: not any(Path(f"/proc/{pid}").exists() for pid in openvpn.values()), 10)
            # ... a new tunnels supervisor comes, and both tunnels connect again through new openvpns
            assert _wait(lambda: _children(core.pid).get("tunnels", before["tunnels"]) != before["tunnels"], 15)
            assert _children(core.pid)["gatewatcher"] == before["gatewatcher"]
            assert _wait(lambda: set(_connected(run)) == set(PARTIES)
                         and not set(_connected(run).values()) & set(openvpn.values()), 30)
        finally:
            _stop(core, servers)
        assert _children(core.pid) == {}
        shown = bed.smgw("gw", "log", "show", "--log", "system", "--json", "--config", str(bed.config))
        events = [json.loads(line) for line in shown.stdout.splitlines()]
        exited = [e for e in events if e["event"] == "part.exited"]
        assert [e["detail"]["part"] for e in exited] == ["tunnels"] and exited[0]["detail"]["code"] == -9
        started = [e["detail"]["part"] for e in events if e["event"] == "part.started"]
        assert started.count("tunnels") == 2 and started.count("gatewatcher") == 1


def test_in_process_runs_the_parts_as_threads_of_one_process(tmp_path: Path,
                                                             meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("normal")
    with make_testbed(tmp_path, "modern") as bed:
        _meter_and_portal(bed, sim)
        assert bed.smgw("gw", "apply", "--config", str(bed.config)).returncode == 0
        servers = _start_headends(bed)
        run = bed.root / "run"
        core = bed.lab.popen("gw", *SMGW, "gateway", "run", "--in-process", "--config", str(bed.config), env=bed.env)
        try:
            assert _wait(lambda: set(_connected(run)) == set(PARTIES), 30), read_states(run)
            # the tunnels and the GateWatcher are threads; the portal, facing the HAN, is never
            # in the process that holds the token
            assert _wait(lambda: set(_children(core.pid)) == {"portal"}, 20), _children(core.pid)
            openvpn = list(_connected(run).values())
            assert all(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == core.pid
                       for pid in openvpn)
        finally:
            _stop(core, servers)
        assert not any(Path(f"/proc/{pid}").exists() for pid in openvpn)
        shown = bed.smgw("gw", "log", "show", "--log", "system", "--json", "--config", str(bed.config))
        events = [json.loads(line) for line in shown.stdout.splitlines()]
        started = {e["detail"]["part"] for e in events if e["event"] == "part.started"}
        assert started == {"tunnels", "gatewatcher", "portal"}
        assert any(e["event"] == "gatewatcher.listening" for e in events)
        failed = [e["detail"] for e in events if e["event"] == "selftest.failed"]
        assert not failed, f"the token shared by three threads: {failed}"
        assert bed.smgw("gw", "log", "verify", "--config", str(bed.config)).returncode == 0


def _portal_layout(root: Path, gid: int) -> None:
    """The folders the portal reads, as on a board without systemd: the portal user's group,
    setgid (so the store the core makes there gets it too), read-only for the group; the
    secrets under them (the tunnels' keys) stay root's alone."""
    for folder in (root / "state", root / "state-rendered", root / "run"):
        folder.mkdir(exist_ok=True)
        os.chown(folder, 0, gid)
        folder.chmod(0o2750)
    for path in (root / "state-rendered" / "portal.json", *(root / "run").iterdir()):
        if path.is_file():
            os.chown(path, 0, gid)
            path.chmod(0o640)


def test_gateway_run_as_root_starts_the_portal_as_portal_user(meter_sim: Callable[..., Simulator],
                                                              portal_account: str) -> None:
    """``[portal] user`` through ``smgw gateway run`` itself. It refuses a user that could
    read a secret (here the config, with the households' one-time codes); then the portal
    child is that user, its groups only its own, with only CAP_NET_BIND_SERVICE (port 443),
    no-new-privileges, none of root's environment, in a session of its own, and serves."""
    sim = meter_sim("normal")
    account = pwd.getpwnam(portal_account)
    folder = Path(tempfile.mkdtemp(prefix="smgw-parts-"))  # pytest's tmp is root's alone (0700)
    try:
        folder.chmod(0o711)
        with make_testbed(folder, "modern") as bed:
            root = bed.root
            _meter_and_portal(bed, sim, f'user = "{portal_account}"\n')
            assert bed.smgw("gw", "apply", "--config", str(bed.config)).returncode == 0
            _portal_layout(root, account.pw_gid)
            bed.config.chmod(0o644)
            refused = bed.lab.run("gw", *SMGW, "gateway", "run", "--config", str(bed.config), env=bed.env, timeout=60)
            assert refused.returncode == 2 and f"can read {bed.config}" in refused.stderr, refused.stderr
            bed.config.chmod(0o600)
            core = bed.lab.popen("gw", *SMGW, "gateway", "run", "--config", str(bed.config), env=bed.env,
                                 stderr=subprocess.PIPE)
            try:
                assert _wait(lambda: "portal" in _children(core.pid), 20), _children(core.pid)
                portal = _children(core.pid)["portal"]
                assert _wait(lambda: bed.lab.run("han", SMGW[0], "-c", FETCH, "https://192.168.7.1:443/login",
                                                 timeout=20).returncode == 0, 30), "the portal does not serve"
                status = _status(portal)
                assert status["Uid"].split() == [str(account.pw_uid)] * 4, status["Uid"]
                assert status["Gid"].split() == [str(account.pw_gid)] * 4, status["Gid"]
                assert status["Groups"].split() == [str(account.pw_gid)], status["Groups"]
                for key in ("CapPrm", "CapEff", "CapBnd", "CapAmb", "CapInh"):
                    assert int(status[key], 16) == 1 << 10, (key, status[key])
                assert status["NoNewPrivs"].strip() == "1"
                environ = Path(f"/proc/{portal}/environ").read_bytes().split(b"\0")
                assert not [e for e in environ if e.startswith(b"SMGW_")], environ
                assert os.readlink(f"/proc/{portal}/cwd") == "/"
                session = int(Path(f"/proc/{portal}/stat").read_text().rsplit(")", 1)[1].split()[3])
                assert session == portal and session != os.getsid(core.pid), "the portal shares root's session"
                assert portal == _children(core.pid)["portal"], "the portal restarted"
            finally:
                core.send_signal(signal.SIGTERM)
                _, errors = core.communicate(timeout=30)
            assert (root / "portal").stat().st_uid == account.pw_uid
            assert (root / "portal" / "portal.db").stat().st_uid == account.pw_uid
            assert "[portal] " in errors.decode(), "the portal's output does not come through the supervisor"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


FETCH = """
import ssl, sys, urllib.request
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with urllib.request.urlopen(sys.argv[1], context=ctx, timeout=3) as r:
    sys.exit(0 if r.status == 200 else 1)
"""
