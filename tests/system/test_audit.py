"""Audit logs sealed by a real SoftHSM2 key, checked by ``smgw log verify``; retention that
really forgets (the raw database file and its WAL are grepped).

The tampering is done the way someone with the file would do it: plain SQL with the
append-only trigger dropped. ``verify`` must name the row and the kind and exit 3.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from appliance import config as config_mod
from appliance.audit import Auditor
from appliance.audit_chain import LOGS, content, genesis
from appliance.config import GatewayConfig
from appliance.retention import apply_retention
from appliance.store import Store
from pki.token import Token
from reader.models import Identification, LoadProfileInterval, LogbookEntry, Reading, Readout
from tests.system.conftest import PIN, run_smgw

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _config(tmp_path: Path, db: Path, key: str = "token", audit_key: str = "audit-test") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[store]\npath = "{db}"\n[token]\nlabel = "gw-test"\n'
                    f'[logs]\nkey = "{key}"\naudit_key = "{audit_key}"\n'
                    "[retention]\nreadings_days = 30\nsystem_log_days = 30\ncalibration_log_days = 30\n"
                    "consumer_log_days = 30\n")
    return path


def _fill(store: Store, cfg: GatewayConfig, rows: int = 8, start: dt.datetime = T0) -> None:
    auditor = Auditor.for_config(store, cfg, create_key=True)
    for i in range(rows):
        at = start + dt.timedelta(minutes=i)
        auditor.record("system", "tunnel.state", {"name": "dso", "state": f"S{i}"}, at=at)
        auditor.record("calibration", "integrity.retried", {"note": f"attempt {i}"}, consumer="m1", at=at)
        auditor.record("consumer", "delivery.sent", {"delivery_id": f"d{i}", "party": "dso"}, consumer="m1", at=at)
    assert auditor.waiting == 0


def _sql(db: Path, *statements: str) -> None:
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("DROP TRIGGER IF EXISTS audit_log_append_only")
    for statement in statements:
        con.execute(statement)
    con.close()


TAMPERING: dict[str, Callable[[str], tuple[str, ...]]] = {
    "changed": lambda log: (f"UPDATE audit_log SET detail = replace(detail, '3', '9') WHERE log = '{log}' AND seq = 4",),
    "deleted": lambda log: (f"DELETE FROM audit_log WHERE log = '{log}' AND seq = 4",),
    "inserted": lambda log: (
        f"UPDATE audit_log SET seq = -seq WHERE log = '{log}' AND seq >= 5",
        f"UPDATE audit_log SET seq = 1 - seq WHERE log = '{log}' AND seq < 0",
        ("INSERT INTO audit_log (log, seq, at, event, consumer, detail, prev_mac, mac) SELECT log, 5, at, event, "
        f"consumer, '{{\"forged\":1}}', mac, randomblob(32) FROM audit_log WHERE log = '{log}' AND seq = 4")),
    "reordered": lambda log: (
        f"UPDATE audit_log SET seq = -1 WHERE log = '{log}' AND seq = 4",
        f"UPDATE audit_log SET seq = 4 WHERE log = '{log}' AND seq = 5",
        f"UPDATE audit_log SET seq = 5 WHERE log = '{log}' AND seq = -1"),
}
NAMED = {"changed": "row seq 4: changed", "deleted": "row seq 5: deleted", "inserted": "row seq 5: inserted",
         "reordered": "row seq 4: reordered"}


def test_verify_names_each_kind_of_tampering_on_each_log(token: Token, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMGW_TOKEN_PIN", PIN)
    db = tmp_path / "clean.db"
    cfg = config_mod.load(_config(tmp_path, db))
    with Store.open(db) as store:
        _fill(store, cfg)
    clean = run_smgw("log", "verify", "--config", str(_config(tmp_path, db)))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.count("8 rows, intact") == 3
    for log in LOGS:
        for kind, statements in TAMPERING.items():
            copy = tmp_path / f"{log}-{kind}.db"
            shutil.copy(db, copy)
            _sql(copy, *statements(log))
            done = run_smgw("log", "verify", "--log", log, "--config", str(_config(tmp_path, copy)))
            assert done.returncode == 3, (log, kind, done.stdout, done.stderr)
            assert f"{log} log, {NAMED[kind]}" in done.stdout, (log, kind, done.stdout)


def test_recomputing_the_chain_without_the_token_key_is_found(token: Token, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack a keyless SHA-256 chain cannot see: rewrite a row and re-seal everything after it."""
    monkeypatch.setenv("SMGW_TOKEN_PIN", PIN)
    db = tmp_path / "smgw.db"
    cfg = config_mod.load(_config(tmp_path, db))
    with Store.open(db) as store:
        _fill(store, cfg, rows=4)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("DROP TRIGGER audit_log_append_only")
    prev = genesis("consumer")
    for row_id, log, at, event, consumer, detail in con.execute(
            "SELECT id, log, at, event, consumer, detail FROM audit_log WHERE log = 'consumer' ORDER BY seq").fetchall():
        detail = detail.replace('"dso"', '"nobody"')
        mac = hashlib.sha256(prev + content(log, at, event, consumer, detail)).digest()
        con.execute("UPDATE audit_log SET detail = ?, prev_mac = ?, mac = ? WHERE id = ?", (detail, prev, mac, row_id))
        prev = mac
    con.close()
    done = run_smgw("log", "verify", "--log", "consumer", "--config", str(_config(tmp_path, db)))
    assert done.returncode == 3 and done.stdout.count(": changed:") == 4, done.stdout


def test_log_show_prints_rows_and_json(token: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("SMGW_TOKEN_PIN", PIN)
    db = tmp_path / "smgw.db"
    cfg = config_mod.load(_config(tmp_path, db))
    with Store.open(db) as store:
        _fill(store, cfg, rows=3)
    shown = run_smgw("log", "show", "--log", "consumer", "--json", "--since", "2026-01-01T00:01:00",
                     "--config", str(_config(tmp_path, db)))
    assert shown.returncode == 0, shown.stderr
    docs = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [d["detail"]["delivery_id"] for d in docs] == ["d1", "d2"]
    assert all(d["consumer"] == "m1" for d in docs)


MARKERS = ("731946.285", "MARKER-LOGBOOK-5521", "MARKER-AUDIT-8830")


def _marked_readout(at: dt.datetime) -> Readout:
    return Readout(
        identification=Identification(text="ISK5MT831", manufacturer="ISK", baud_char="5", model="MT831"),
        readings=(Reading("1.8.0", Decimal(MARKERS[0]), MARKERS[0], "kWh"),),
        load_profile=(LoadProfileInterval(start=at, values={"1.5.0": Decimal(MARKERS[0])}, units={"1.5.0": "kW"},
                                          status="00"),),
        logbook=(LogbookEntry(timestamp=at, status=MARKERS[1], values=()),),
        attempts=1)


def _raw_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def test_expired_data_is_gone_from_the_file_and_the_wal(token: Token, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMGW_TOKEN_PIN", PIN)
    db = tmp_path / "smgw.db"
    cfg = config_mod.load(_config(tmp_path, db))
    old, recent = T0, T0 + dt.timedelta(days=60)
    with Store.open(db) as store:
        auditor = Auditor.for_config(store, cfg, create_key=True)
        store.save_readout(meter_id="m1", readout=_marked_readout(old), read_at=old)
        store.save_readout(meter_id="m1", readout=Readout(
            identification=Identification(text="ISK5MT831", manufacturer="ISK", baud_char="5", model="MT831"),
            readings=(Reading("1.8.0", Decimal("1.000"), "1.000", "kWh"),), attempts=1), read_at=recent)
        for log in LOGS:
            auditor.record(log, "marker", {"text": MARKERS[2]}, consumer="m1", at=old)
            auditor.record(log, "later", {"text": "kept"}, consumer="m1", at=recent)
        raw = _raw_bytes(db)
        assert all(m.encode() in raw for m in MARKERS), "the markers must be on disk before retention"
        report = apply_retention(store, cfg, auditor, now=recent + dt.timedelta(days=1))
        assert report.wal_truncated
        assert report.readings["readouts"] == 1 and report.readings["readings"] == 1
        assert report.log_rows == {"system": 1, "calibration": 1, "consumer": 1}
        assert store.count_readouts() == 1
        deleted = store.audit_last("system", "retention.deleted")
    raw = _raw_bytes(db)
    for marker in MARKERS:
        assert marker.encode() not in raw, f"{marker} still in the database file or its WAL"
    # the deletion is logged with counts and period, never a value; and the chains still verify
    assert deleted is not None and '"readouts":1' in deleted.detail and MARKERS[0] not in deleted.detail
    done = run_smgw("log", "verify", "--config", str(_config(tmp_path, db)))
    assert done.returncode == 0, done.stdout + done.stderr
