"""The store: exact round trips, all-or-nothing readouts, migrations, read-only access."""

from __future__ import annotations

import sqlite3
import stat
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from appliance.store import Store, StoreError
from appliance.store.migrations import LATEST
from reader.models import Identification, LoadProfileInterval, Reading, Readout

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
IDENT = Identification(text="ISK5MT831", manufacturer="ISK", baud_char="5", model="MT831")


def readout(profile_starts: tuple[int, ...] = ()) -> Readout:
    return Readout(
        identification=IDENT,
        readings=(
            Reading("1.8.0", Decimal("4417.218"), "0004417.218", "kWh"),
            Reading("2.8.0", Decimal("0.000"), "0000000.000", "kWh"),
            Reading("96.77.2", None, "ERROR", None, None, "ERROR"),
            Reading("1.6.0", Decimal("1.245"), "0001.245", "kW", T0 - timedelta(days=3)),
            Reading("1.8.0", Decimal("4417.218"), "0004417.218", "kWh"),
        ),
        load_profile=tuple(
            LoadProfileInterval(start=T0 + timedelta(minutes=15 * n), values={"1.5": Decimal("0.412")},
                                units={"1.5": "kW"}, status="00")
            for n in profile_starts
        ),
    )


def test_round_trip_is_exact_and_ordered(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        rid = store.save_readout(meter_id="m1", readout=readout(), read_at=T0)
        stored = store.readings_for(rid)
        assert [r.address for r in stored] == ["1.8.0", "2.8.0", "96.77.2", "1.6.0", "1.8.0"]
        assert stored[0].value == Decimal("4417.218") and str(stored[1].value) == "0.000"
        assert stored[2].value is None and stored[2].status == "ERROR"
        assert stored[3].meter_time == T0 - timedelta(days=3)
        latest = store.latest_readout("m1")
        assert latest is not None and latest.read_at == T0 and latest.id == rid


def test_duplicate_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        store.save_readout(meter_id="m1", readout=readout(), read_at=T0)
        with pytest.raises(StoreError, match="not stored"):
            store.save_readout(meter_id="m1", readout=readout(), read_at=T0)
        assert store.count_readouts() == 1


def test_a_failure_midway_leaves_nothing(tmp_path: Path) -> None:
    bad = Readout(identification=IDENT, readings=(Reading("1.8.0", Decimal("1"), "1", "kWh", datetime(2026, 1, 1)),))
    with Store.open(tmp_path / "s.db") as store:
        with pytest.raises(StoreError, match="timezone"):
            store.save_readout(meter_id="m1", readout=bad, read_at=T0)
        assert store.count_readouts() == 0
    with sqlite3.connect(tmp_path / "s.db") as con:
        assert con.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0


def test_naive_read_time_is_refused(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store, pytest.raises(StoreError):
        store.save_readout(meter_id="m1", readout=readout(), read_at=datetime(2026, 1, 1))


def test_overlapping_profile_windows_store_each_interval_once(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        store.save_readout(meter_id="m1", readout=readout((0, 1, 2)), read_at=T0)
        store.save_readout(meter_id="m1", readout=readout((1, 2, 3)), read_at=T0 + timedelta(seconds=30))
        rows = store.load_profile("m1", T0, T0 + timedelta(hours=1))
        assert [r.start for r in rows] == [T0 + timedelta(minutes=15 * n) for n in range(4)]


def test_migrations_wal_modes_and_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "s.db"
    with Store.open(db) as store:
        assert store.schema_version() == LATEST
        assert store.integrity_check() == "ok"
    with Store.open(db) as store:  # idempotent
        assert store.schema_version() == LATEST
    assert stat.S_IMODE(db.stat().st_mode) == 0o640
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(StoreError, match="newer"):
        Store.open(db)


def test_read_only_cannot_write(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    Store.open(db).close()
    with Store.open(db, read_only=True) as store, pytest.raises(StoreError):
        store.save_readout(meter_id="m1", readout=readout(), read_at=T0)
    with pytest.raises(StoreError):
        Store.open(tmp_path / "missing.db", read_only=True)
