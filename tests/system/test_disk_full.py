"""A full disk under the store (a small tmpfs, really full): the core keeps reading, holds the
readouts in memory, says so in its log, and stores every one of them once space is back."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.system.conftest import ROOT, SMGW, Simulator, require_root

POLL = 1.0


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    require_root()
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs: {done.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    """Write zeros until the file system refuses: ENOSPC is what the store will now meet."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 4096)
    return filler


def _read_times(db: Path) -> list[datetime]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [datetime.fromisoformat(t) for (t,) in con.execute("SELECT read_at FROM readouts ORDER BY read_at")]


def test_a_full_disk_loses_no_readout(tmp_path: Path, meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("normal")
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "smgw.db"
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(f'[meter]\nport = "{sim.link}"\npoll_interval = {POLL}\ntimeout = 5\nattempts = 2\n'
                       f'[store]\npath = "{db}"\n[logs]\nkey = "none"\n'
                       f'[paths]\nstate = "{tmp_path}"\nrun = "{tmp_path}/run"\n')
        log = tmp_path / "core.log"
        core = subprocess.Popen([*SMGW, "-v", "gateway", "run", "--config", str(cfg)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (not db.exists() or len(_read_times(db)) < 3):
                time.sleep(0.3)
            assert len(_read_times(db)) >= 3
            filler = _fill(disk)
            full_at = time.monotonic()
            before = len(_read_times(db))  # (a readout may have landed while the disk filled)
            time.sleep(8)  # several polls against a full disk
            assert "cannot store readouts" in log.read_text(), log.read_text()[-2000:]
            during = len(_read_times(db))
            assert during <= before + 1  # at most one commit squeezed into the last free pages
            filler.unlink()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "store works again" not in log.read_text():
                time.sleep(0.3)
            assert "store works again" in log.read_text(), log.read_text()[-2000:]
            time.sleep(2 * POLL)
            assert core.poll() is None, "the core must survive a full disk"
            ended = time.monotonic()
        finally:
            core.terminate()
            core.wait(timeout=15)
        times = _read_times(db)
        # every poll during the outage was read and is now stored: no gap wider than a few polls
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert max(gaps) < 4 * POLL + 2, gaps
        assert len(times) >= before + (ended - full_at) / (POLL + 2) - 2
        shown = subprocess.run([*SMGW, "log", "show", "--log", "system", "--config", str(cfg)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60, check=False)
        assert "store.failing" in shown.stdout and "store.recovered" in shown.stdout, shown.stdout[-2000:]
