"""Self-tests in the netns testbed: each critical check fails when its thing is tampered with,
and a failing critical check stops the core's processing and sending until it passes again."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from appliance.lab_world import LAB_PROFILES
from tests.system.conftest import SMGW, Simulator
from tests.system.testbed import Bed, make_testbed

NOBODY = 65534


def _selftest(bed: Bed) -> tuple[int, dict[str, dict[str, object]]]:
    done = bed.smgw("gw", "selftest", "--json", "--config", str(bed.config))
    assert done.stdout, done.stderr
    return done.returncode, {c["name"]: c for c in json.loads(done.stdout)}


def _failed(bed: Bed) -> set[str]:
    code, checks = _selftest(bed)
    failed = {name for name, c in checks.items() if not c["ok"]}
    assert (code == 1) == bool(failed), (code, checks)
    return failed


def _apply(bed: Bed) -> None:
    done = bed.smgw("gw", "apply", "--config", str(bed.config))
    assert done.returncode == 0, done.stderr


def test_each_critical_check_catches_its_tampering(tmp_path: Path) -> None:
    with make_testbed(tmp_path, "modern") as bed:
        _apply(bed)
        code, checks = _selftest(bed)
        assert code == 0, checks
        assert set(checks) == {"token", "database", "forwarding", "disk_space", "tunnel_configs", "ruleset"}
        # a rule added behind smgw's back
        assert bed.lab.run("gw", "nft", "add", "rule", "inet", "smgw", "input", "tcp", "dport", "22",
                           "accept").returncode == 0
        assert _failed(bed) == {"ruleset"}
        _apply(bed)
        assert _failed(bed) == set()
        # a tunnel config edited on disk (a route the server could not push)
        conf = bed.root / "state-rendered/openvpn/dso.conf"
        conf.write_text(conf.read_text() + "route 0.0.0.0 0.0.0.0\n")
        assert _failed(bed) == {"tunnel_configs"}
        _apply(bed)
        # forwarding switched on
        assert bed.lab.run("gw", "sysctl", "-qw", "net.ipv4.ip_forward=1").returncode == 0
        assert _failed(bed) == {"forwarding"}
        _apply(bed)  # apply switches it off again
        assert _failed(bed) == set()
        # the results are what smgw status shows
        status = bed.smgw("gw", "status", "--json", "--config", str(bed.config))
        doc = json.loads(status.stdout)
        assert doc["sending"] is True and doc["selftests"]["ruleset"]["ok"] is True


def test_apply_renders_where_only_root_can_change_and_follows_nothing_planted(tmp_path: Path) -> None:
    """User smgw owns the state folder: what it plants there (a symlink where older versions
    rendered, where nft's last good ruleset went) is removed, never followed; the services read
    configs from a folder only root can change, and apply refuses one another user could."""
    with make_testbed(tmp_path, "modern") as bed:
        state, rendered = bed.root / "state", bed.root / "state-rendered"
        state.mkdir(mode=0o750)
        os.chown(state, NOBODY, NOBODY)  # as provisioned: user smgw's
        victim = tmp_path / "victim"
        victim.mkdir()
        (victim / "precious").write_text("keep me\n")
        (state / "rendered").symlink_to(victim)
        (state / "nftables.last-good.tmp").symlink_to(victim / "precious")
        (state / "firewall.loaded").symlink_to(victim / "precious")
        done = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert done.returncode == 0, done.stderr
        assert f"removed {state / 'rendered'}" in done.stdout
        assert sorted(p.name for p in victim.iterdir()) == ["precious"]
        assert (victim / "precious").read_text() == "keep me\n"
        assert not any((state / n).is_symlink() for n in ("rendered", "nftables.last-good.tmp", "firewall.loaded"))
        info = rendered.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, NOBODY, 0o750)
        for name in ("openvpn/dso.conf", "nftables.conf", "nftables.last-good.conf", "firewall.loaded"):
            assert (rendered / name).stat().st_uid == 0, name
        assert _failed(bed) == set()  # the self-tests read it there
        # a rendered folder another user could change: refused, with where and why, nothing written
        os.chown(rendered, NOBODY, NOBODY)
        conf = rendered / "openvpn/dso.conf"
        conf.write_text(conf.read_text() + "# edited\n")
        before = conf.stat()
        refused = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert refused.returncode != 0 and f"{rendered} belongs to uid {NOBODY}, not root" in refused.stderr
        after = conf.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert conf.read_text().endswith("# edited\n")  # not rendered again


def test_a_failing_critical_check_stops_sending_until_it_passes(tmp_path: Path,
                                                                meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("normal")
    with make_testbed(tmp_path, "modern") as bed:
        bed.config.write_text(f'[meter]\nport = "{sim.link}"\npoll_interval = 2\ntimeout = 5\nattempts = 2\n'
                              + bed.config.read_text() + LAB_PROFILES + "\n[selftest]\ninterval_s = 5\n")
        _apply(bed)
        conf = bed.root / "state-rendered/openvpn/supplier.conf"
        good = conf.read_text()
        conf.write_text(good.replace("remote ", "remote 203.0.113.66 1194\n# was: remote ", 1))
        db = bed.root / "state/smgw.db"
        core = bed.lab.popen("gw", *SMGW, "gateway", "run", "--core-only", "--config", str(bed.config), env=bed.env,
                             stdout=subprocess.DEVNULL)
        try:
            assert _wait_for_event(db, "sending.stopped", 30)
            # the core runs as root here, yet the rendering checks ran in a child: the core
            # never loaded the renderers (Jinja2 maps MarkupSafe's C speedups when it loads)
            maps = Path(f"/proc/{core.pid}/maps").read_text()
            assert "markupsafe" not in maps
            # nor pydantic: a child verified the config it runs on (pydantic-core is a C library)
            assert "_pydantic_core" not in maps
            stopped_at = _count(db, "readouts")
            deadline = time.monotonic() + 20  # two more readouts: reading goes on, nothing is processed
            while _count(db, "readouts") < stopped_at + 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            with sqlite3.connect(db) as con:
                assert con.execute("SELECT count(*) FROM profile_progress").fetchone()[0] == 0
                assert con.execute("SELECT count(*) FROM readouts").fetchone()[0] >= stopped_at + 2  # reading goes on
            conf.write_text(good)
            assert _wait_for_event(db, "sending.resumed", 30)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _count(db, "profile_progress") < 2:
                time.sleep(0.5)
            assert _count(db, "profile_progress") == 2  # both profiles started their first window
        finally:
            core.terminate()
            core.wait(timeout=15)
        verified = bed.smgw("gw", "log", "verify", "--config", str(bed.config))
        assert verified.returncode == 0, verified.stdout
        shown = bed.smgw("gw", "log", "show", "--log", "system", "--json", "--config", str(bed.config))
        failed = [json.loads(line) for line in shown.stdout.splitlines()
                  if json.loads(line)["event"] == "selftest.failed"]
        assert any(f["detail"]["check"] == "tunnel_configs" for f in failed)


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _wait_for_event(db: Path, event: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    if con.execute("SELECT 1 FROM audit_log WHERE event = ?", (event,)).fetchone():
                        return True
            except sqlite3.OperationalError:
                pass  # not migrated yet
        time.sleep(0.5)
    return False
