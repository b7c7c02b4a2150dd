"""``smgw gateway run`` killed with SIGKILL again and again: the store stays whole.

Each run reads the simulator with load profile and logbook on, so a readout is one large
transaction; the kill lands at random moments, many of them in the middle of storing.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.system.conftest import ROOT, SMGW, Simulator, run_smgw


def _config(tmp_path: Path, link: Path, db: Path) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        "[meter]\n"
        f'port = "{link}"\n'
        "poll_interval = 1\n"
        "timeout = 15\n"
        "load_profile = true\n"
        "logbook = true\n"
        "[store]\n"
        f'path = "{db}"\n'
        "[logs]\n"
        'key = "none"  # no token in this test: rows are sealed with SHA-256\n'
        f'[paths]\nstate = "{db.parent}"\nrun = "{db.parent}/run"\n'
        "[retention]\n"
        "readings_days = 3650  # keep the simulator's 2023 load profile: big transactions to kill\n"
    )
    return cfg


def test_kill_9_twenty_times_leaves_no_partial_and_no_duplicate(
    tmp_path: Path, meter_sim: Callable[..., Simulator]
) -> None:
    sim = meter_sim("normal")
    one = run_smgw("read", "--port", str(sim.link), "--json", "--timeout", "20")
    assert one.returncode == 0, one.stderr
    per_readout = len(json.loads(one.stdout)["readings"])
    db = tmp_path / "smgw.db"
    cfg = _config(tmp_path, sim.link, db)
    log = tmp_path / "gateway.log"

    def start() -> subprocess.Popen[bytes]:
        """The gateway, once its reader loop runs: kills are timed from there, not from the
        process start, which takes seconds longer when the machine is busy."""
        before = _lines(log, "reader loop:")
        proc = subprocess.Popen([*SMGW, "-v", "gateway", "run", "--config", str(cfg)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log.open("ab"))
        deadline = time.monotonic() + 60
        while _lines(log, "reader loop:") == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _lines(log, "reader loop:") > before, "the gateway did not start its reader loop"
        return proc

    # how long one readout takes from the loop's start to stored, on this machine now
    proc, t0 = start(), time.monotonic()
    stored_lines = _lines(log, " stored: ")
    while _lines(log, " stored: ") == stored_lines and time.monotonic() - t0 < 120:
        time.sleep(0.02)
    readout_s = time.monotonic() - t0
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    rng = random.Random(62056)
    stored_before = 0
    for _ in range(20):
        proc = start()
        time.sleep(rng.uniform(0.2, 2.2) * readout_s)  # before, during and after storing
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            counts = con.execute(
                "SELECT r.id, COUNT(g.seq) FROM readouts r LEFT JOIN readings g ON g.readout_id = r.id "
                "GROUP BY r.id"
            ).fetchall()
            assert all(n == per_readout for _, n in counts), f"partial readout: {counts}"
            dupes = con.execute(
                "SELECT meter_id, read_at, COUNT(*) FROM readouts GROUP BY meter_id, read_at HAVING COUNT(*) > 1"
            ).fetchall()
            assert dupes == []
            orphans = con.execute(
                "SELECT COUNT(*) FROM readings WHERE readout_id NOT IN (SELECT id FROM readouts)"
            ).fetchone()[0]
            assert orphans == 0
            stored = len(counts)
        assert stored >= stored_before
        stored_before = stored
    assert stored_before >= 5, "the gateway should have stored readouts between the kills"


def _lines(log: Path, marker: str) -> int:
    try:
        return log.read_text(errors="replace").count(marker)
    except FileNotFoundError:
        return 0
