"""``smgw demo``: the system so far, on one machine, with real processes.

A meter simulator on a pseudo-terminal (the LMN), the gateway's core service reading it
into its store, the household portal (HTTPS on loopback, a one-time code to set the
password), and a live view of readings arriving, read from the store read-only. Everything
it starts it stops, and its temporary folder goes with it.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from appliance.child import end_all
from appliance.store import Store, StoreError

SHOWN = ("1.8.0", "1.8.1", "1.8.2", "2.8.0", "1.6.0")
METER_ID = "ISK-DEMO-0001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config_text(link: Path, db: Path, poll: float, portal_port: int, code: str) -> str:
    return (
        "[meter]\n"
        f'port = "{link}"\n'
        f'id = "{METER_ID}"\n'
        "baud = 9600\n"
        f"poll_interval = {poll}\n"
        "timeout = 10\n"
        "[store]\n"
        f'path = "{db}"\n'
        "[logs]\n"
        'key = "none"\n'
        f'[paths]\nstate = "{db.parent}"\nrun = "{db.parent}/run"\n'
        f"[firewall]\nportal_port = {portal_port}\n"
        f'[portal]\naddress = "127.0.0.1"\nstate_dir = "{db.parent}/portal"\n'
        f'tls_cert = "{db.parent}/portal/portal.crt"\ntls_key = "{db.parent}/portal/portal.key"\n'
        f'[[portal.consumers]]\nname = "demo"\nmeters = ["{METER_ID}"]\nsetup_code = "{code}"\n'
    )


def _wait_for(path: Path, seconds: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException(f"the meter simulator did not come up (link {path})")
        time.sleep(0.05)


def run_demo(seconds: float | None, poll: float, scenario: str) -> None:
    """Start simulator and gateway, show readouts until ``seconds`` pass or Ctrl-C."""
    work = Path(tempfile.mkdtemp(prefix="smgw-demo-"))
    link, db, cfg = work / "meter", work / "smgw.db", work / "gateway.toml"
    port, code = _free_port(), "DEMO-" + secrets.token_hex(6).upper()
    cfg.write_text(_config_text(link, db, poll, port, code))
    smgw = [sys.executable, "-m", "appliance.cli"]
    procs: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        click.echo(f"[1/3] meter simulator (Iskraemeco MT831, scenario {scenario}) on {link}")
        sim = subprocess.Popen([*smgw, "meter-sim", "--link", str(link), "--scenario", scenario],
                               stdout=subprocess.DEVNULL)
        procs.append(sim)
        _wait_for(link, 10, sim)
        click.echo(f"[2/3] gateway core: reading every {poll:g}s into {db}; the portal beside it")
        procs.append(subprocess.Popen([*smgw, "-v", "gateway", "run", "--config", str(cfg)],
                                      stderr=(work / "gateway.log").open("wb")))
        click.echo(f"      portal: https://127.0.0.1:{port}/setup  user demo, one-time code {code} "
                   "(self-signed certificate)")
        click.echo("[3/3] readings arriving (Ctrl-C to stop):")
        _show(db, stop, seconds)
    finally:
        signal.signal(signal.SIGINT, previous)
        end_all(procs, 10)
        shutil.rmtree(work, ignore_errors=True)
        click.echo("demo stopped; processes ended and temporary files removed")


def _show(db: Path, stop: threading.Event, seconds: float | None) -> None:
    started = time.monotonic()
    seen = 0
    while not stop.is_set():
        if seconds is not None and time.monotonic() - started >= seconds:
            break
        if db.exists():
            try:
                with Store.open(db, read_only=True) as store:
                    latest = store.latest_readout()
                    if latest is not None and latest.id != seen:
                        seen = latest.id
                        values = {r.address: r for r in store.readings_for(latest.id)}
                        shown = "  ".join(
                            f"{a}={values[a].value} {values[a].unit or ''}".rstrip()
                            for a in SHOWN if a in values and values[a].value is not None
                        )
                        click.echo(f"  {latest.read_at.isoformat(timespec='seconds')} "
                                   f"meter {latest.meter_id} #{store.count_readouts()}: {shown}")
            except StoreError:
                pass  # the gateway is still creating the database
        stop.wait(0.5)
