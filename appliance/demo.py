"""``smgw demo``: the system so far, on one machine, with real processes.

A meter simulator on a pseudo-terminal (the LMN), the gateway's core service reading it
into its store, and a live view of readings arriving, read from the store read-only as
the portal will. Everything it starts it stops, and its temporary folder goes with it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from appliance.store import Store, StoreError

SHOWN = ("1.8.0", "1.8.1", "1.8.2", "2.8.0", "1.6.0")


def _config_text(link: Path, db: Path, poll: float) -> str:
    return (
        "[meter]\n"
        f'port = "{link}"\n'
        "baud = 9600\n"
        f"poll_interval = {poll}\n"
        "timeout = 10\n"
        "[store]\n"
        f'path = "{db}"\n'
        "[logs]\n"
        'key = "none"\n'
        f'[paths]\nstate = "{db.parent}"\nrun = "{db.parent}/run"\n'
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
    cfg.write_text(_config_text(link, db, poll))
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
        click.echo(f"[2/3] gateway core: reading every {poll:g}s into {db}")
        procs.append(subprocess.Popen([*smgw, "-v", "gateway", "run", "--config", str(cfg)],
                                      stderr=(work / "gateway.log").open("wb")))
        click.echo("[3/3] readings arriving (Ctrl-C to stop):")
        _show(db, stop, seconds)
    finally:
        signal.signal(signal.SIGINT, previous)
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
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
