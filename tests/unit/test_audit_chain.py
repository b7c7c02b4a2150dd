"""The audit chain's checker on a real SQLite store: each kind of tampering is found and named.

Rows are sealed with an HMAC key held here (the system test does the same with the token);
tampering is done the way an attacker with the file would: plain SQL, trigger dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.audit_chain import LOGS, ChainRow, sha256_mac, verify
from appliance.store import Store

KEY = b"k" * 32
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def mac(data: bytes) -> bytes:
    return hmac.new(KEY, data, hashlib.sha256).digest()


def fill(path: Path, log: str, n: int = 10) -> None:
    with Store.open(path) as store:
        for i in range(n):
            store.audit_append(log, T0 + dt.timedelta(minutes=i), f"event.{i}", "meter-1" if log == "consumer" else None,
                               {"i": i, "text": f"row {i}"}, mac)


def sql(path: Path, *statements: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("DROP TRIGGER IF EXISTS audit_log_append_only")
    for statement in statements:
        con.execute(statement)
    con.close()


def check(path: Path, log: str, key: Callable[[bytes], bytes] = mac) -> list[tuple[int, str]]:
    with Store.open(path) as store:
        return [(f.seq, f.kind) for f in verify(log, store.audit_rows(log), key)]


@pytest.mark.parametrize("log", LOGS)
def test_an_untouched_chain_is_intact(tmp_path: Path, log: str) -> None:
    fill(tmp_path / "db", log)
    assert check(tmp_path / "db", log) == []


def test_another_key_fails_every_row(tmp_path: Path) -> None:
    fill(tmp_path / "db", "system", 3)
    assert check(tmp_path / "db", "system", sha256_mac) == [(1, "changed"), (2, "changed"), (3, "changed")]


@pytest.mark.parametrize("log", LOGS)
def test_a_changed_row_is_named(tmp_path: Path, log: str) -> None:
    fill(tmp_path / "db", log)
    sql(tmp_path / "db", f"UPDATE audit_log SET detail = replace(detail, 'row 4', 'row X') WHERE log = '{log}' AND seq = 5")
    assert check(tmp_path / "db", log) == [(5, "changed")]


@pytest.mark.parametrize("log", LOGS)
def test_a_deleted_row_is_named(tmp_path: Path, log: str) -> None:
    fill(tmp_path / "db", log)
    sql(tmp_path / "db", f"DELETE FROM audit_log WHERE log = '{log}' AND seq = 4")
    assert check(tmp_path / "db", log) == [(5, "deleted")]


def test_deleting_the_first_rows_is_found(tmp_path: Path) -> None:
    fill(tmp_path / "db", "system")
    sql(tmp_path / "db", "DELETE FROM audit_log WHERE seq <= 2")
    assert check(tmp_path / "db", "system") == [(3, "deleted")]


@pytest.mark.parametrize("log", LOGS)
def test_an_inserted_row_is_named(tmp_path: Path, log: str) -> None:
    fill(tmp_path / "db", log)
    # make room at seq 6 and put a forged row there, linked to seq 5 like the real one
    sql(tmp_path / "db",
        f"UPDATE audit_log SET seq = -seq WHERE log = '{log}' AND seq >= 6",
        f"UPDATE audit_log SET seq = 1 - seq WHERE log = '{log}' AND seq < 0",
        f"INSERT INTO audit_log (log, seq, at, event, consumer, detail, prev_mac, mac) "
        f"SELECT log, 6, at, 'forged', consumer, detail, mac, randomblob(32) FROM audit_log WHERE log = '{log}' AND seq = 5")
    assert check(tmp_path / "db", log) == [(6, "inserted")]


def test_a_copied_row_is_named(tmp_path: Path) -> None:
    fill(tmp_path / "db", "consumer")
    sql(tmp_path / "db", "INSERT INTO audit_log (log, seq, at, event, consumer, detail, prev_mac, mac) "
                         "SELECT log, 11, at, event, consumer, detail, prev_mac, mac FROM audit_log WHERE seq = 3")
    with Store.open(tmp_path / "db") as store:
        findings = verify("consumer", store.audit_rows("consumer"), mac)
    assert [(f.seq, f.kind) for f in findings] == [(11, "inserted")]
    assert "copy of seq 3" in findings[0].message


@pytest.mark.parametrize("log", LOGS)
def test_reordered_rows_are_named(tmp_path: Path, log: str) -> None:
    fill(tmp_path / "db", log)
    sql(tmp_path / "db",  # swap seq 3 and 4
        f"UPDATE audit_log SET seq = -1 WHERE log = '{log}' AND seq = 3",
        f"UPDATE audit_log SET seq = 3 WHERE log = '{log}' AND seq = 4",
        f"UPDATE audit_log SET seq = 4 WHERE log = '{log}' AND seq = -1")
    assert check(tmp_path / "db", log) == [(3, "reordered")]


def test_rows_cannot_be_updated_through_sqlite_while_the_trigger_stands(tmp_path: Path) -> None:
    fill(tmp_path / "db", "system", 2)
    con = sqlite3.connect(tmp_path / "db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE audit_log SET detail = '{}' WHERE seq = 1")
    con.close()


def test_pruning_keeps_the_rest_verifiable_and_a_deeper_cut_is_found(tmp_path: Path) -> None:
    fill(tmp_path / "db", "system", 10)
    with Store.open(tmp_path / "db") as store:
        gone = store.audit_prune("system", T0 + dt.timedelta(minutes=4), T0 + dt.timedelta(days=1), mac)
        assert gone == 4
        rows = store.audit_rows("system")
    assert [r.seq for r in rows] == [5, 6, 7, 8, 9, 10, 11]
    assert rows[-1].event == "log.pruned"
    assert check(tmp_path / "db", "system") == []
    sql(tmp_path / "db", "DELETE FROM audit_log WHERE seq = 5")  # older than the checkpoint says
    assert check(tmp_path / "db", "system") == [(6, "deleted")]


def test_a_forged_checkpoint_is_not_believed(tmp_path: Path) -> None:
    fill(tmp_path / "db", "system", 6)
    # hide the first three rows behind a made-up checkpoint that claims them pruned
    sql(tmp_path / "db", "INSERT INTO audit_log (log, seq, at, event, consumer, detail, prev_mac, mac) "
                         "SELECT log, 7, at, 'log.pruned', NULL, json_object('anchor', hex(mac)), mac, randomblob(32) "
                         "FROM audit_log WHERE seq = 3",
        "DELETE FROM audit_log WHERE seq <= 3")
    assert check(tmp_path / "db", "system") == [(4, "deleted"), (7, "inserted")]


def test_chain_rows_hold_what_was_written(tmp_path: Path) -> None:
    fill(tmp_path / "db", "consumer", 2)
    with Store.open(tmp_path / "db") as store:
        rows: list[ChainRow] = store.audit_rows("consumer", consumer="meter-1")
        assert store.audit_rows("consumer", consumer="meter-2") == []
    assert [(r.seq, r.event, r.detail) for r in rows] == [(1, "event.0", '{"i":0,"text":"row 0"}'),
                                                          (2, "event.1", '{"i":1,"text":"row 1"}')]
