"""The core service's reader loop with real processes: stores, survives, recovers."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from tests.system.conftest import ROOT, SMGW, Simulator, run_smgw


def write_config(path: Path, link: Path, db: Path, poll: float = 1) -> Path:
    path.write_text(f'[meter]\nport = "{link}"\npoll_interval = {poll}\ntimeout = 5\nattempts = 2\n'
                    f'[store]\npath = "{db}"\n[logs]\nkey = "none"\n'
                    f'[paths]\nstate = "{db.parent}"\nrun = "{db.parent}/run"\n')
    return path


def test_gateway_stores_readouts_with_exact_values(tmp_path: Path, meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("normal")
    db = tmp_path / "smgw.db"
    cfg = write_config(tmp_path / "gateway.toml", sim.link, db)
    result = run_smgw("gateway", "run", "--config", str(cfg), "--readouts", "3", timeout=60)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = con.execute(
            "SELECT g.value FROM readings g JOIN readouts r ON r.id = g.readout_id "
            "WHERE g.address = '1.8.0' AND g.seq = (SELECT MIN(seq) FROM readings WHERE readout_id = r.id "
            "AND address = '1.8.0') ORDER BY r.id"
        ).fetchall()
        meters = {m for (m,) in con.execute("SELECT DISTINCT meter_id FROM readouts")}
    values = [Decimal(v) for (v,) in rows]
    assert len(values) == 3 and values == sorted(values) and values[0] < values[-1]
    assert meters == {"37155794"}, "the meter's own number (C.1.0 / 0.0.0) is the id"


def test_failing_meter_is_retried_with_backoff_and_recovers(tmp_path: Path, meter_sim: Callable[..., Simulator]) -> None:
    link = tmp_path / "meter"
    db = tmp_path / "smgw.db"
    cfg = write_config(tmp_path / "gateway.toml", link, db)
    log = tmp_path / "gateway.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([*SMGW, "gateway", "run", "--config", str(cfg)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            # from the first failure on (the interpreter's start takes its time on a busy machine)
            deadline = time.monotonic() + 30
            while "readout failed" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, "a missing meter must not end the service"
                time.sleep(0.1)
            time.sleep(3.5)
            assert proc.poll() is None, "a missing meter must not end the service"
            text = log.read_text()
            failures = text.count("readout failed")
            assert 1 <= failures <= 4, f"backoff: a few retries, not a busy loop ({failures})"
            assert str(link) in text and "does not exist" in text
            meter_sim("normal")  # the meter appears
            deadline = time.monotonic() + 30
            stored = 0
            while time.monotonic() < deadline and stored == 0:
                time.sleep(0.5)
                if db.exists():
                    with sqlite3.connect(db) as con:
                        stored = con.execute("SELECT COUNT(*) FROM readouts").fetchone()[0]
            assert stored >= 1, "the service recovers once the meter answers"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    assert proc.returncode == 0
    assert "stopped:" in log.read_text()


def test_meter_events_and_retransmissions_reach_the_calibration_log_once(
        tmp_path: Path, meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("bad-bcc-once")
    db = tmp_path / "smgw.db"
    cfg = write_config(tmp_path / "gateway.toml", sim.link, db)
    # the simulator's events are from 2023: keep ten years, or retention would not store them
    cfg.write_text(cfg.read_text().replace("attempts = 2\n", "attempts = 2\nlogbook = true\n", 1)
                   + "[retention]\nreadings_days = 3650\n")
    result = run_smgw("gateway", "run", "--config", str(cfg), "--readouts", "3", timeout=90)
    assert result.returncode == 0, result.stderr
    shown = run_smgw("log", "show", "--log", "calibration", "--json", "--config", str(cfg))
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    events = [r for r in rows if r["event"] == "meter.event"]
    with sqlite3.connect(db) as con:
        logbook = con.execute("SELECT count(*) FROM logbook").fetchone()[0]
    # each logbook event once, though every readout brings the whole logbook again
    assert logbook >= 3 and len(events) == logbook
    assert len({(e["detail"]["at"], e["detail"]["status"]) for e in events}) == logbook
    assert any(r["event"] == "integrity.retried" for r in rows), rows
    assert run_smgw("log", "verify", "--config", str(cfg)).returncode == 0
