"""The clock check against a real SNTP exchange in a network namespace: a time source that
moves away from the gateway's clock gets readouts flagged and a calibration-log entry; when
it comes back, flagging stops and that is logged too."""

from __future__ import annotations

import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.system.conftest import ROOT, SMGW, Simulator, require_root


@contextmanager
def netns() -> Iterator[str]:
    require_root()
    name = f"tc{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _integrity(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [i for (i,) in con.execute("SELECT integrity FROM readouts ORDER BY read_at")]


def _events(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [e for (e,) in con.execute("SELECT event FROM audit_log WHERE log = 'calibration' ORDER BY seq")]


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except sqlite3.Error:
            pass
        time.sleep(0.3)
    return False


def test_a_deviating_clock_flags_readouts_until_it_is_back(tmp_path: Path,
                                                           meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("normal")
    offset = tmp_path / "offset"
    offset.write_text("0.0")
    db = tmp_path / "smgw.db"
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[meter]\nport = "{sim.link}"\npoll_interval = 1\ntimeout = 5\nattempts = 2\n'
                   f'[store]\npath = "{db}"\n[logs]\nkey = "none"\n'
                   f'[paths]\nstate = "{tmp_path}"\nrun = "{tmp_path}/run"\n'
                   '[time]\nntp_server = "127.0.0.1"\nmax_deviation_s = 2.0\ncheck_interval_s = 5\n')
    with netns() as ns:
        server = subprocess.Popen(["ip", "netns", "exec", ns, SMGW[0], str(ROOT / "tests/system/ntp_responder.py"),
                                   "127.0.0.1", str(offset)], stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline().strip() == b"listening"
        core = subprocess.Popen(["ip", "netns", "exec", ns, *SMGW, "gateway", "run", "--config", str(cfg)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(tmp_path / "core.log").open("wb"))
        try:
            assert _wait(lambda: len(_integrity(db)) >= 2, 30)
            assert set(_integrity(db)) == {"ok"}
            offset.write_text("-30.0")  # the source says the gateway runs 30 s fast
            assert _wait(lambda: "time.deviation" in _events(db), 15), (tmp_path / "core.log").read_text()[-2000:]
            assert _wait(lambda: _integrity(db)[-1] == "clock-deviation", 10)
            offset.write_text("0.3")
            assert _wait(lambda: "time.back" in _events(db), 15)
            assert _wait(lambda: _integrity(db)[-1] == "ok", 10)
        finally:
            core.terminate()
            core.wait(timeout=15)
            server.terminate()
            server.wait(timeout=5)
    flags = _integrity(db)
    first = flags.index("clock-deviation")
    # one contiguous run of flagged readouts, between unflagged ones
    assert flags[:first] == ["ok"] * first and "ok" in flags[first:]
    back = first + flags[first:].index("ok")
    assert set(flags[first:back]) == {"clock-deviation"} and set(flags[back:]) == {"ok"}
