"""``smgw demo`` as root: the whole system in network namespaces, with real processes.

The meter simulator on the LMN (a pseudo-terminal), the gateway in its namespace (reader,
processor and sender, tunnels, GateWatcher, portal, firewall), two market parties each with
an OpenVPN server and a headend, the GWA with its admin tunnel server, and a HAN client that
opens the portal. It shows progress, then a live summary; it sends a WakeUp and a BreakUp
and shows the admin tunnel and its API come and go. Everything it made — processes,
namespaces, files — it removes when it ends (after ``--seconds`` or on Ctrl-C).
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import click

from appliance.child import end_all
from appliance.errors import SmgwError
from appliance.lab import Lab
from appliance.lab_world import (
    GATEWAY_ID,
    GWA,
    LAB_PROFILES,
    PARTIES,
    SMGW,
    WAKEUP_PORT,
    build_world,
    gateway_toml,
    gwa_server_conf,
    start_party,
)

PORTAL_PORT = 443
GW_HAN, GW_WAN = "192.168.7.1", "192.0.2.2"
METER_ID = "ISK-DEMO-0001"
FETCH = """
import ssl, sys, urllib.request
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    with urllib.request.urlopen(sys.argv[1], context=ctx, timeout=3) as r:
        print(r.status)
except Exception as exc:
    print(type(exc).__name__); sys.exit(1)
"""


class Demo:
    def __init__(self, seconds: float | None, profile: str) -> None:
        self.seconds = seconds
        self.profile = profile
        self.work = Path(tempfile.mkdtemp(prefix="smgw-demo-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.lab: Lab | None = None
        self.env: dict[str, str] = {}
        self.stop = threading.Event()
        #: each process, what it is and where its log is: a process that dies is shown once
        self.watched: list[tuple[subprocess.Popen[bytes], str, Path | None]] = []
        self.reported: set[int] = set()  #: pids shown as dead already

    # -- setting up ------------------------------------------------------------------------

    def start(self) -> None:
        root = self.work
        click.echo(f"[1/6] PKI and security module in {root}")
        self.env = build_world(root, self.profile, progress=lambda step: click.echo(f"      {step}"))
        click.echo("[2/6] network namespaces: gateway, HAN client, WAN, two market parties, the GWA")
        self.lab = Lab(f"demo{uuid.uuid4().hex[:4]}", hosts={**PARTIES, "gwa": GWA})
        self.lab.build()
        click.echo("[3/6] market parties: an OpenVPN server and a headend each; the GWA's admin tunnel server")
        for name in PARTIES:
            server, ingest = start_party(self.lab, root, name, self.profile, self.env)
            self._watch(server, f"{name}'s OpenVPN server", root / f"{name}-server.log")
            self._watch(ingest, f"{name}'s headend", root / f"{name}-headend.log")
        self._spawn("gwa", "openvpn", "--config", str(gwa_server_conf(root, self.profile)),
                    "--log-append", str(root / "gwa-server.log"), label="the GWA's OpenVPN server",
                    log=root / "gwa-server.log")
        click.echo("[4/6] meter simulator (Iskraemeco MT831) on the LMN")
        link = root / "meter"
        self._watch(subprocess.Popen([*SMGW, "meter-sim", "--link", str(link), "--scenario", "normal"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env),
                    "the meter simulator", None)
        deadline = time.monotonic() + 30
        while not link.exists():
            if time.monotonic() > deadline:
                raise SmgwError("the meter simulator did not come up")
            time.sleep(0.05)
        click.echo("[5/6] the gateway: firewall applied, then reader, processor and sender, tunnels, "
                   "GateWatcher and portal")
        self.code = "DEMO-" + secrets.token_hex(6).upper()
        config = root / "gateway.toml"
        config.write_text(
            f'[meter]\nport = "{link}"\nid = "{METER_ID}"\npoll_interval = 5\ntimeout = 5\nattempts = 2\n'
            + gateway_toml(root, self.profile)
            + f'\n[firewall]\nportal_port = {PORTAL_PORT}\n'
            + f'[portal]\nstate_dir = "{root}/portal"\ntls_cert = "{root}/portal/portal.crt"\n'
              f'tls_key = "{root}/portal/portal.key"\n'
              f'[[portal.consumers]]\nname = "demo"\nmeters = ["{METER_ID}"]\nsetup_code = "{self.code}"\n'
            + LAB_PROFILES)
        self.config = config
        applied = self.lab.run("gw", *SMGW, "apply", "--config", str(config), env=self.env, timeout=60)
        if applied.returncode != 0:
            raise SmgwError(f"smgw apply: {applied.stderr.strip()[-300:]}")
        self._spawn("gw", *SMGW, "gateway", "run", "--config", str(config),
                    stderr_log=root / "gateway.log", label="the gateway")
        click.echo("[6/6] a HAN client opens the portal")
        url = f"https://{GW_HAN}:{PORTAL_PORT}/login"
        status = ""
        deadline = time.monotonic() + 60  # the gateway starts the portal as its child: two interpreters
        while time.monotonic() < deadline and not status.startswith("200"):
            status = self.lab.run("han", SMGW[0], "-c", FETCH, url, env=self.env, timeout=10).stdout.strip()
            time.sleep(0.5)
        wan = self.lab.run("wan", SMGW[0], "-c", FETCH, f"https://{GW_WAN}:{PORTAL_PORT}/login", env=self.env,
                           timeout=10).stdout.strip()
        click.echo(f"      portal {url} from the HAN: {status or 'no answer'}; from the WAN: {wan or 'no answer'} "
                   f"(user demo, one-time code {self.code})")

    def _spawn(self, role: str, *argv: str, label: str, stderr_log: Path | None = None,
               log: Path | None = None) -> None:
        """``argv`` in ``role``'s namespace; its stderr to ``stderr_log``, and the log to show
        if it dies is ``log`` (one it writes itself) or else that one."""
        assert self.lab is not None
        proc = subprocess.Popen(["ip", "netns", "exec", self.lab.ns(role), *argv], env=self.env,
                                stdout=subprocess.DEVNULL,
                                stderr=stderr_log.open("wb") if stderr_log is not None else subprocess.DEVNULL)
        self._watch(proc, label, log or stderr_log)

    def _watch(self, proc: subprocess.Popen[bytes], label: str, log: Path | None) -> None:
        self.procs.append(proc)
        self.watched.append((proc, label, log))

    def deaths(self) -> list[str]:
        """One line per process of the demo that has exited since the last call, with the last
        line of its log: a party's headend that died must not look like a quiet party."""
        lines = []
        for proc, label, log in self.watched:
            if proc.pid in self.reported or proc.poll() is None:
                continue
            self.reported.add(proc.pid)
            last = _last_line(log) if log is not None else ""
            lines.append(f"  ! {label} exited with code {proc.returncode}" + (f": {last}" if last else "")
                         + (f" (log {log})" if log is not None else ""))
        return lines

    # -- watching ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        root = self.work
        out: dict[str, Any] = {"readouts": _scalar(root / "state/smgw.db", "SELECT count(*) FROM readouts")}
        out["deliveries"] = {name: _scalar(root / f"{name}-headend/ingest.db", "SELECT count(*) FROM deliveries")
                             for name in PARTIES}
        tunnels = {}
        for path in sorted((root / "run/tunnels").glob("*.json")):
            try:
                tunnels[path.stem] = json.loads(path.read_text()).get("state", "?")
            except (OSError, ValueError):
                continue
        out["tunnels"] = tunnels
        out["admin"] = self.admin_state()
        return out

    def admin_state(self) -> str:
        detail = _last_event(self.work / "state/smgw.db", "gatewatcher.admin-state")
        state = str(detail.get("state", "")) if detail else ""
        return "closed" if state in ("", "STOPPED") else state

    def show(self, started: float) -> None:
        s = self.summary()
        tunnels = " ".join(f"{k}={v}" for k, v in s["tunnels"].items()) or "starting"
        deliveries = " ".join(f"{k}={v}" for k, v in s["deliveries"].items())
        click.echo(f"  t+{time.monotonic() - started:5.0f}s  readouts {s['readouts']:>4}  deliveries {deliveries}  "
                   f"tunnels {tunnels}  admin {s['admin']}")
        if not self.stop.is_set():  # (Ctrl-C reaches every child too: those are not deaths to report)
            for line in self.deaths():
                click.echo(line)

    def wakeup_cycle(self) -> None:
        """WakeUp from the GWA, the admin API over the tunnel, then BreakUp."""
        assert self.lab is not None
        root = self.work
        db = root / "state/smgw.db"
        before = _last_id(db)
        # a WakeUp is one UDP datagram: when no decision follows (lost, or the GateWatcher still
        # starting on a busy machine), the GWA sends another, with a fresh sequence number
        for attempt in range(3):
            click.echo("  GWA sends a signed WakeUp to the gateway's wake-up port" + (" again" if attempt else ""))
            self._admin("wakeup", "--to", f"{GW_WAN}:{WAKEUP_PORT}", "--cert", str(root / "gwa-wakeup.crt"),
                        "--key", str(root / "gwa-wakeup.key"))
            if self._wait(lambda: _last_event(db, "gatewatcher.accepted", before)
                          or _last_event(db, "gatewatcher.refused", before), 15) is not None:
                break
        # the handshake, the token signing in it, the API's TLS front (retried if it was slow)
        up = self._wait(lambda: _last_event(db, "gatewatcher.admin-api-up", before), 60)
        if up is None:
            said = "; ".join(_events_since(db, "gatewatcher.", before)[-5:]) or "nothing"
            listening = _last_event(db, "gatewatcher.listening") is not None
            click.echo(f"  admin tunnel did not come up (admin state {self.admin_state()}); "
                       f"the GateWatcher logged: {said}"
                       + ("" if listening else " (it never said it was listening)"))
            for line in _last_lines(root / "gateway.log", 8):  # what the gateway said last, for why
                click.echo(f"    gateway.log: {line}")
            return
        click.echo(f"  admin tunnel CONNECTED; admin API on {up['address']}:{up['port']} (inside the tunnel only)")
        done = self.lab.run("gwa", *SMGW, "admin", "status", "--gateway", GATEWAY_ID, "--to",
                            f"{up['address']}:{up['port']}", "--cert", str(root / "gwa-server.crt"),
                            "--key", str(root / "gwa-server.key"), "--root", str(root / "ca/ca.crt"),
                            "--crl", str(root / "crl.pem"), env=self.env, timeout=30)
        if done.returncode == 0:
            doc = json.loads(done.stdout)
            click.echo(f"  GWA asks the admin API: gateway {doc['gateway']}, {doc['readouts']} readouts, "
                       f"sending {'on' if doc['sending'] else 'STOPPED'}")
        else:
            click.echo(f"  admin API: {done.stderr.strip()[-200:]}")
        click.echo("  GWA sends a signed BreakUp")
        self._admin("breakup", "--to", f"{GW_WAN}:{WAKEUP_PORT}", "--cert", str(root / "gwa-wakeup.crt"),
                    "--key", str(root / "gwa-wakeup.key"))
        down = self._wait(lambda: _last_event(root / "state/smgw.db", "gatewatcher.admin-api-down", before), 15)
        click.echo(f"  admin tunnel {'closed' if down is not None else 'still open'} (admin {self.admin_state()})")

    def _admin(self, action: str, *args: str) -> None:
        assert self.lab is not None
        done = self.lab.run("gwa", *SMGW, "admin", action, "--gateway", GATEWAY_ID, *args, env=self.env, timeout=30)
        if done.returncode != 0:
            click.echo(f"  {action}: {done.stderr.strip()[-200:]}")

    def _wait(self, probe: Any, seconds: float) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stop.is_set():
            found = probe()
            if found is not None:
                return found
            time.sleep(0.3)
        return None

    # -- ending ------------------------------------------------------------------------------

    def close(self) -> None:
        end_all(self.procs, 15)
        if self.lab is not None:
            self.lab.close()
        shutil.rmtree(self.work, ignore_errors=True)
        click.echo(f"demo stopped: {len(self.procs)} processes ended, namespaces removed, {self.work} deleted")


def _rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows of a read-only query, or none while the database is missing or busy (the
    demo shows what there is; the next look sees more)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return list(con.execute(sql, params).fetchall())
    except sqlite3.Error:
        return []


def _scalar(db: Path, sql: str) -> int:
    rows = _rows(db, sql)
    return int(rows[0][0]) if rows else 0


def _last_line(log: Path) -> str:
    lines = _last_lines(log, 1)
    return lines[0] if lines else ""


def _last_lines(log: Path, count: int) -> list[str]:
    """The last ``count`` non-empty lines of ``log`` (each cut to 300 characters); none if unreadable."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 8192))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return []
    return [line[-300:] for line in lines[-count:]]


def _last_id(db: Path) -> int:
    return _scalar(db, "SELECT coalesce(max(id), 0) FROM audit_log")


def _events_since(db: Path, prefix: str, after_id: int) -> list[str]:
    """``event detail`` of the system-log rows after row ``after_id`` whose event starts with
    ``prefix``, oldest first."""
    rows = _rows(db, "SELECT event, detail FROM audit_log WHERE log = 'system' AND id > ? "
                     "AND substr(event, 1, length(?)) = ? ORDER BY id", (after_id, prefix, prefix))
    return [f"{event} {detail}" for event, detail in rows]


def _last_event(db: Path, event: str, after_id: int = 0) -> dict[str, Any] | None:
    """The newest system-log row of ``event`` (after row ``after_id``): its detail."""
    rows = _rows(db, "SELECT detail FROM audit_log WHERE log = 'system' AND event = ? AND id > ? "
                     "ORDER BY id DESC LIMIT 1", (event, after_id))
    if not rows:
        return None
    doc = json.loads(rows[0][0])
    return doc if isinstance(doc, dict) else None


def run_lab_demo(seconds: float | None, profile: str = "modern") -> None:
    demo = Demo(seconds, profile)
    previous = signal.signal(signal.SIGINT, lambda *_: demo.stop.set())
    signal.signal(signal.SIGTERM, lambda *_: demo.stop.set())
    try:
        try:
            demo.start()
        except SmgwError:
            for line in demo.deaths():  # what died on the way, before close() deletes its log
                click.echo(line)
            raise
        click.echo("live (Ctrl-C to stop):")
        started = time.monotonic()
        wakeup_at = started + (min(30.0, seconds / 3) if seconds else 30.0)
        cycled = False
        while not demo.stop.is_set():
            if seconds is not None and time.monotonic() - started >= seconds:
                break
            demo.show(started)
            if not cycled and time.monotonic() >= wakeup_at:
                cycled = True
                demo.wakeup_cycle()
            demo.stop.wait(5)
        demo.show(started)
    finally:
        signal.signal(signal.SIGINT, previous)
        demo.close()
