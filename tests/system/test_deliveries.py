"""Meter simulator -> gateway (token keys) -> each party's tunnel -> its headend: each holds
what its profile allows, at its resolution, under its identity, and nothing in clear; a WAN
outage over several send windows loses and duplicates nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from appliance.lab_world import LAB_PROFILES, start_party
from tests.system.conftest import SMGW, Simulator
from tests.system.testbed import PARTIES, Bed, JsonLines, make_testbed


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a headend's database, SQLite or PostgreSQL ([] before the ingest made its tables)."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.exists():
            return []
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            return con.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(url) as con:
        try:
            return con.execute(sql).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def _values(db: str) -> list[tuple[str, str, str, str | None]]:
    return _rows(db, "SELECT d.subject, v.address, v.unit, v.value FROM delivery_values v "
                     "JOIN deliveries d ON d.delivery_id = v.delivery_id ORDER BY v.period_from")


def _windows(db: str) -> list[str]:
    return [w for (w,) in _rows(db, "SELECT window_from FROM deliveries ORDER BY window_from")]


def _covers(db: str, until: float) -> bool:
    """Every minute window from the first delivered one up to ``until`` arrived, each once."""
    import datetime as dt

    windows = _windows(db)
    if not windows or len(windows) != len(set(windows)):
        return False
    first = dt.datetime.strptime(windows[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    last_needed = dt.datetime.fromtimestamp(until, dt.UTC).replace(second=0) - dt.timedelta(minutes=1)
    needed = {(first + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
              for i in range(int((last_needed - first).total_seconds() // 60) + 1)}
    return needed <= set(windows)


#: prints "<status> <body>" for a GET, or "error <reason>" when nothing answers
FETCH = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as reply:
        print(reply.status, reply.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
except OSError as exc:
    print("error", exc)
"""


def _start_headends(bed: Bed, databases: dict[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
    return [proc for name in PARTIES
            for proc in start_party(bed.lab, bed.root, name, bed.profile, bed.env, (databases or {}).get(name))]


@pytest.mark.parametrize("headend_database", ["sqlite"], indirect=True)  # PostgreSQL: test_deliveries_pg.py
def test_each_party_receives_exactly_its_profile_through_its_tunnel(
        tmp_path: Path, meter_sim: Callable[..., Simulator], headend_database: Callable[[str], str]) -> None:
    delivery_suite(tmp_path, meter_sim, headend_database)


def delivery_suite(tmp_path: Path, meter_sim: Callable[..., Simulator], database: Callable[[str], str]) -> None:
    """The whole acceptance path, for one kind of headend database."""
    sim = meter_sim("normal")
    with make_testbed(tmp_path, "bsi") as bed:
        bed.config.write_text(f'[meter]\nport = "{sim.link}"\npoll_interval = 2\ntimeout = 5\nattempts = 2\n'
                              + bed.config.read_text() + LAB_PROFILES)
        applied = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert applied.returncode == 0, applied.stderr
        dbs = {name: database(name) for name in PARTIES}
        procs = _start_headends(bed, dbs)
        tunnels = JsonLines(bed, "tunnels", "run", seconds=600)
        core = None
        try:
            for name in PARTIES:
                assert tunnels.wait_for(lambda line, n=name: line["name"] == n and line["state"] == "CONNECTED", 20)
            # start the core late in a minute: the first window then closes a few seconds on
            while time.time() % 60 < 45:
                time.sleep(0.5)
            core = bed.lab.popen("gw", *SMGW, "-v", "gateway", "run", "--core-only", "--config", str(bed.config), env=bed.env,
                                 stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + 100
            while time.monotonic() < deadline and not all(_values(db) for db in dbs.values()):
                time.sleep(1)
            dso, supplier = _values(dbs["dso"]), _values(dbs["supplier"])
            assert dso and supplier, "no delivery arrived"
            # the DSO: 1.8.0 only, meter id, 3 places
            assert {(s, a, u) for s, a, u, _ in dso} == {("37155794", "1.8.0", "kWh")}
            assert all(v is None or Decimal(v) == Decimal(v).quantize(Decimal("0.001")) for *_, v in dso)
            # the supplier: 1.8.0 and 21.7.0 under a pseudonym, 1 place
            assert {a for _, a, _, _ in supplier} == {"1.8.0", "21.7.0"}
            subjects = {s for s, *_ in supplier}
            assert len(subjects) == 1 and next(iter(subjects)).startswith("ps-") and "37155794" not in subjects
            assert all(v is None or Decimal(v) == Decimal(v).quantize(Decimal("0.1")) for *_, v in supplier)
            # nothing of the meter id in the supplier's database, and the read API serves the DSO's data
            if dbs["supplier"].startswith("sqlite:///"):
                assert b"37155794" not in Path(dbs["supplier"][len("sqlite:///"):]).read_bytes()
            assert not _rows(dbs["supplier"], "SELECT 1 FROM delivery_values WHERE subject = '37155794'")
            api = bed.lab.run("dso", SMGW[0], "-c", FETCH, "http://127.0.0.1:8444/v1/meters/37155794/readings?from=2000",
                              env=bed.env)
            status, body = api.stdout.split(" ", 1)
            assert status == "200" and json.loads(body)[0]["address"] == "1.8.0", api.stdout + api.stderr
            # ... on the headend host only: a gateway that asks through its tunnel reads nothing
            asked = bed.lab.run("gw", SMGW[0], "-c", FETCH, "http://10.81.0.1:8443/v1/meters/37155794/readings?from=2000",
                                env=bed.env)
            assert asked.stdout.startswith("404 ") and "1.8.0" not in asked.stdout, asked.stdout + asked.stderr
            # a WAN outage over two send windows: the outbox holds them, and they all arrive afterwards
            down_at = time.time()
            assert bed.lab.run("gw", "ip", "link", "set", "wan0", "down").returncode == 0
            time.sleep(130)
            assert bed.lab.run("gw", "ip", "link", "set", "wan0", "up").returncode == 0
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline and not _covers(dbs["dso"], down_at + 125):
                time.sleep(2)
            assert _covers(dbs["dso"], down_at + 125), _windows(dbs["dso"])[-5:]
        finally:
            if core is not None:
                core.terminate()
                core.wait(timeout=10)
            tunnels.stop()
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
        # every delivery in the gateway's outbox is acknowledged or still waiting, and the headends hold each once
        with sqlite3.connect(bed.root / "state/smgw.db") as con:
            acked = {d for (d,) in con.execute("SELECT delivery_id FROM outbox WHERE acked_at IS NOT NULL")}
        stored = set()
        for db in dbs.values():
            rows = [d for (d,) in _rows(db, "SELECT delivery_id FROM deliveries")]
            assert len(rows) == len(set(rows))
            stored |= set(rows)
        assert acked <= stored and acked
        # the consumer log holds one row per acknowledged delivery, for this meter, and every chain is intact
        shown = bed.smgw("gw", "log", "show", "--log", "consumer", "--consumer", "37155794", "--json",
                         "--config", str(bed.config))
        assert shown.returncode == 0, shown.stderr
        rows = [json.loads(line) for line in shown.stdout.splitlines()]
        sent = [r["detail"]["delivery_id"] for r in rows if r["event"] == "delivery.sent"]
        assert sorted(sent) == sorted(acked)
        assert {r["detail"]["party"] for r in rows if r["event"] == "delivery.sent"} == set(PARTIES)
        assert any(r["event"] == "profiles.active" for r in rows)
        system = bed.smgw("gw", "log", "show", "--log", "system", "--json", "--config", str(bed.config))
        events = [json.loads(line) for line in system.stdout.splitlines()]
        assert {e["detail"]["name"] for e in events if e["event"] == "tunnel.state"
                and e["detail"]["state"] == "CONNECTED"} >= set(PARTIES)
        assert any(e["event"] == "core.started" for e in events)
        verified = bed.smgw("gw", "log", "verify", "--json", "--config", str(bed.config))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["key"] == "token"
