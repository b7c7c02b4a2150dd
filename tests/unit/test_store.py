"""The store: exact round trips, all-or-nothing readouts, migrations, modes, kill -9.

No root needed: everything lives under ``tmp_path``; the crash test kills a child
``python -c`` that stores readouts in a loop.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.store import (
    DuplicateReadoutError,
    Store,
    StoredReading,
    StoreError,
    migrations,
    writer,
)
from appliance.store.migrations import Migration
from reader.models import Identification, LoadProfileInterval, LogbookEntry, Reading, Readout

ROOT = Path(__file__).resolve().parents[2]
IDENT = Identification(text="ISK5MT174-0001", manufacturer="ISK", baud_char="5",
                       model="MT174-0001")
T0 = datetime(2026, 11, 25, 7, 15, tzinfo=UTC)
CET = timezone(timedelta(hours=1))

READINGS = (
    Reading("1.8.0", Decimal("4417.218"), "4417.218", "kWh"),
    Reading("1.8.1", Decimal("0.000"), "0.000", "kWh"),
    Reading("F.F", None, "ERROR", None, status="ERROR"),
    Reading("1.6.0", Decimal("1.234"), "1,234", "kW", timestamp=datetime(2026, 11, 1, 6, 15, tzinfo=UTC)),
    Reading("C.7.0", Decimal(3), "3", None),
    Reading("0.9.1", None, "07:15:00", None),
    Reading("C.7.0", Decimal(5), "5", None),  # the same address again, later in the readout
    Reading("99.1.0", None, "", None, status="empty", extra=("x1", "x2")),
    Reading("2.8.0", Decimal("-0.0010"), "-0.0010", "kWh"),
)


def _profile(start: datetime, periods: int, base: int = 0) -> tuple[LoadProfileInterval, ...]:
    return tuple(
        LoadProfileInterval(
            start=start + timedelta(minutes=15 * i),
            values={"1.5.0": Decimal(f"{base + i}.250"), "2.5.0": None},
            units={"1.5.0": "kW", "2.5.0": "kW"},
            status="00",
        )
        for i in range(periods)
    )


def _readout(*, readings: tuple[Reading, ...] = READINGS,
             profile: tuple[LoadProfileInterval, ...] | None = None,
             logbook: tuple[LogbookEntry, ...] | None = None) -> Readout:
    return Readout(identification=IDENT, readings=readings, load_profile=profile,
                   logbook=logbook, attempts=2)


def _raw(db: Path) -> sqlite3.Connection:
    """A second, plain connection: to look at the file as it is on disk."""
    return sqlite3.connect(db, isolation_level=None)


def _counts(db: Path) -> dict[str, int]:
    with _raw(db) as con:
        return {table: con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("readouts", "readings", "load_profile", "logbook")}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "smgw.db"


# -- round trip ------------------------------------------------------------------------------


def test_round_trip_keeps_exact_decimals_order_and_utc(db: Path) -> None:
    read_at = datetime(2026, 11, 25, 8, 15, 0, 123456, tzinfo=CET)  # 07:15:00.123456 UTC
    with Store.open(db) as store:
        rid = store.save_readout(meter_id="12345678", readout=_readout(), read_at=read_at)
        stored = store.latest_readout("12345678")
        readings = store.readings_for(rid)
    assert stored is not None
    assert (stored.id, stored.meter_id, stored.identification, stored.integrity,
            stored.attempts) == (rid, "12345678", IDENT.text, "ok", 2)
    assert stored.read_at == read_at and stored.read_at.tzinfo is UTC
    assert [r.address for r in readings] == [r.address for r in READINGS]
    assert [r.seq for r in readings] == list(range(len(READINGS)))
    for got, sent in zip(readings, READINGS, strict=True):
        assert isinstance(got, StoredReading)
        assert (got.value, got.text, got.unit, got.status, got.extra) == (
            sent.value, sent.text, sent.unit, sent.status, sent.extra)
        if sent.value is not None:  # same digits and exponent, not just an equal number
            assert got.value is not None and got.value.as_tuple() == sent.value.as_tuple()
        assert got.meter_time == sent.timestamp
        assert got.read_at == read_at and got.meter_id == "12345678" and got.integrity == "ok"
    assert str(readings[1].value) == "0.000" and readings[2].value is None
    assert readings[3].meter_time is not None and readings[3].meter_time.tzinfo is UTC
    with _raw(db) as con:  # on disk: decimal TEXT, never REAL
        kinds = {row[0] for row in con.execute("SELECT typeof(value) FROM readings")}
        assert kinds == {"text", "null"}
        assert con.execute("SELECT read_at FROM readouts").fetchone()[0] == (
            "2026-11-25T07:15:00.123456+00:00")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.decimals(allow_nan=False, allow_infinity=False))
def test_any_finite_decimal_comes_back_identical(tmp_path: Path, value: Decimal) -> None:
    db = tmp_path / "prop.db"
    with Store.open(db) as store:
        read_at = datetime.now(UTC)
        rid = store.save_readout(meter_id="m", read_at=read_at, readout=_readout(
            readings=(Reading("1.8.0", value, str(value), "kWh"),)))
        got = store.readings_for(rid)[0].value
    assert got is not None and got.as_tuple() == value.as_tuple()


def test_float_value_is_refused_not_rounded(db: Path) -> None:
    bad = Reading("1.8.0", 0.1, "0.1", "kWh")  # type: ignore[arg-type]
    with Store.open(db) as store, pytest.raises(StoreError, match="must be a Decimal, not float"):
        store.save_readout(meter_id="m", readout=_readout(readings=(bad,)), read_at=T0)
    assert _counts(db)["readouts"] == 0


def test_naive_timestamps_are_refused(db: Path) -> None:
    with Store.open(db) as store:
        with pytest.raises(StoreError, match="read_at .* has no timezone"):
            store.save_readout(meter_id="m", readout=_readout(), read_at=datetime(2026, 1, 1))
        naive = Reading("1.6.0", Decimal(1), "1", "kW", timestamp=datetime(2026, 1, 1))
        with pytest.raises(StoreError, match=r"reading 0 \(1.6.0\) timestamp"):
            store.save_readout(meter_id="m", readout=_readout(readings=(naive,)), read_at=T0)
        with pytest.raises(StoreError, match="since"):
            store.readouts("m", datetime(2026, 1, 1), T0)
        store.save_readout(meter_id="m", readout=_readout(), read_at=T0)  # no transaction left open
        assert store.count_readouts() == 1


def test_queries_by_meter_and_period(db: Path) -> None:
    with Store.open(db) as store:
        assert store.latest_readout() is None
        for minutes in (0, 15, 30):
            store.save_readout(meter_id="a", readout=_readout(), read_at=T0 + timedelta(minutes=minutes))
        store.save_readout(meter_id="b", readout=_readout(), read_at=T0 + timedelta(minutes=5))
        window = store.readouts("a", T0 + timedelta(minutes=15), T0 + timedelta(minutes=30))
        assert [r.read_at for r in window] == [T0 + timedelta(minutes=15)]  # until is exclusive
        latest_a, latest_b, latest = store.latest_readout("a"), store.latest_readout("b"), store.latest_readout()
        assert latest_a is not None and latest_a.read_at == T0 + timedelta(minutes=30)
        assert latest_b is not None and latest_b.meter_id == "b"
        assert latest == latest_a
        assert (store.count_readouts(), store.count_readouts("b"), store.count_readouts("c")) == (4, 1, 0)
        assert store.readings_for(9999) == []


def test_readouts_taken_while_the_clock_deviated_feed_no_delivery(db: Path) -> None:
    with Store.open(db) as store:
        store.save_readout(meter_id="a", readout=_readout(), read_at=T0)
        store.save_readout(meter_id="a", readout=_readout(), read_at=T0 + timedelta(minutes=1),
                           integrity="clock-deviation")
        store.save_readout(meter_id="a", readout=_readout(), read_at=T0 + timedelta(minutes=2))
        samples = store.register_samples("a", "1.8.0", T0, T0 + timedelta(hours=1))
        assert [at for at, _ in samples] == [T0, T0 + timedelta(minutes=2)]
        assert store.count_readouts("a") == 3  # stored, flagged, kept: just not sent


# -- all or nothing --------------------------------------------------------------------------


def test_duplicate_readout_is_refused_and_changes_nothing(db: Path) -> None:
    with Store.open(db) as store:
        store.save_readout(meter_id="m", readout=_readout(profile=_profile(T0, 4)), read_at=T0)
        before = _counts(db)
        other = _readout(readings=READINGS[:2], profile=_profile(T0, 8, base=100),
                         logbook=(LogbookEntry(timestamp=T0, status="0001"),))
        same_instant = T0.astimezone(CET)
        duplicate = (r"readout of meter m at 2026-11-25T07:15:00.000000\+00:00 not stored: "
                     "the meter already has a readout at that time")
        with pytest.raises(DuplicateReadoutError, match=duplicate):
            store.save_readout(meter_id="m", readout=other, read_at=same_instant)
        assert _counts(db) == before
        assert [i.value for i in store.load_profile("m", T0, T0 + timedelta(days=1))][:2] == [
            Decimal("0.250"), None]
        store.save_readout(meter_id="other", readout=other, read_at=T0)  # another meter may
    assert issubclass(DuplicateReadoutError, StoreError)


def test_python_error_midway_leaves_nothing(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("power cut between statements")

    monkeypatch.setattr(writer, "_insert_logbook", boom)  # after readout, readings, profile
    with Store.open(db) as store:
        with pytest.raises(RuntimeError, match="power cut"):
            store.save_readout(meter_id="m", read_at=T0, readout=_readout(
                profile=_profile(T0, 3), logbook=(LogbookEntry(timestamp=T0, status="01"),)))
        assert _counts(db) == {"readouts": 0, "readings": 0, "load_profile": 0, "logbook": 0}
        monkeypatch.undo()
        store.save_readout(meter_id="m", readout=_readout(), read_at=T0)  # still usable
        assert store.count_readouts() == 1


def test_sqlite_error_midway_becomes_store_error_and_leaves_nothing(db: Path) -> None:
    Store.open(db).close()
    with _raw(db) as con:  # the last table written refuses every row
        con.execute("CREATE TRIGGER refuse BEFORE INSERT ON logbook "
                    "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    refused = "readout of meter m at .* not stored: disk says no"
    with Store.open(db) as store, pytest.raises(StoreError, match=refused):
        store.save_readout(meter_id="m", read_at=T0, readout=_readout(
            profile=_profile(T0, 3), logbook=(LogbookEntry(timestamp=T0, status="01"),)))
    assert _counts(db) == {"readouts": 0, "readings": 0, "load_profile": 0, "logbook": 0}


# -- load profile and logbook ----------------------------------------------------------------


def test_overlapping_load_profile_adds_only_new_intervals(db: Path) -> None:
    with Store.open(db) as store:
        first = store.save_readout(meter_id="m", readout=_readout(profile=_profile(T0, 4)), read_at=T0)
        second = store.save_readout(  # periods 2..5, with different values for the overlap
            meter_id="m", read_at=T0 + timedelta(hours=1),
            readout=_readout(profile=_profile(T0 + timedelta(minutes=30), 4, base=100)))
        rows = store.load_profile("m", T0, T0 + timedelta(days=1))
    assert len(rows) == 6 * 2
    starts = sorted({r.start for r in rows})
    assert starts == [T0 + timedelta(minutes=15 * i) for i in range(6)]
    by_start = {r.start: r for r in rows if r.address == "1.5.0"}
    assert [by_start[s].readout_id for s in starts] == [first] * 4 + [second] * 2
    assert by_start[starts[2]].value == Decimal("2.250")  # the first reading of a period stays
    assert by_start[starts[4]].value == Decimal("102.250")
    assert [r.address for r in rows[:2]] == ["1.5.0", "2.5.0"]  # the meter's column order
    assert rows[1].value is None and rows[1].unit == "kW" and rows[0].start.tzinfo is UTC


def test_logbook_entries_are_stored_once(db: Path) -> None:
    events = (LogbookEntry(timestamp=T0, status="0001", values=("a", "1.5")),
              LogbookEntry(timestamp=T0, status="0002"))
    with Store.open(db) as store:
        store.save_readout(meter_id="m", readout=_readout(logbook=events), read_at=T0)
        store.save_readout(meter_id="m", readout=_readout(logbook=events), read_at=T0 + timedelta(hours=1))
        got = store.logbook("m", T0, T0 + timedelta(seconds=1))
    assert [(e.status, e.values, e.timestamp) for e in got] == [
        ("0001", ("a", "1.5"), T0), ("0002", (), T0)]


# -- migrations ------------------------------------------------------------------------------


def test_fresh_database_gets_latest_version_and_reopen_is_idempotent(db: Path) -> None:
    with Store.open(db) as store:
        assert store.schema_version() == migrations.latest_version() == len(migrations.MIGRATIONS)
        store.save_readout(meter_id="m", readout=_readout(), read_at=T0)
    with _raw(db) as con:
        schema = con.execute("SELECT name, sql FROM sqlite_schema ORDER BY name").fetchall()
        assert con.execute("PRAGMA application_id").fetchone()[0] == migrations.APPLICATION_ID
    for _ in range(2):
        with Store.open(db) as store:
            assert store.schema_version() == migrations.latest_version()
            assert store.count_readouts() == 1
    with _raw(db) as con:
        assert con.execute("SELECT name, sql FROM sqlite_schema ORDER BY name").fetchall() == schema


def test_migrations_are_numbered_without_gaps() -> None:
    migrations.check_order(migrations.MIGRATIONS)
    with pytest.raises(ValueError, match="out of order"):
        migrations.check_order((Migration(1, "a", ""), Migration(3, "b", "")))


def test_newer_schema_is_refused(db: Path) -> None:
    Store.open(db).close()
    newer = migrations.latest_version() + 1
    with _raw(db) as con:
        con.execute(f"PRAGMA user_version = {newer}")
    for read_only in (False, True):
        with pytest.raises(StoreError, match=f"schema version {newer} is newer than this smgw knows"):
            Store.open(db, read_only=read_only)


def test_foreign_sqlite_file_is_refused(db: Path) -> None:
    with _raw(db) as con:
        con.execute("CREATE TABLE something_else (x)")
    with pytest.raises(StoreError, match="not an smgw database"):
        Store.open(db)
    db.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot open the database"):
        Store.open(db)


def test_new_migration_upgrades_and_a_failing_one_rolls_back(db: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(db) as store:
        store.save_readout(meter_id="m", readout=_readout(), read_at=T0)
    base = migrations.MIGRATIONS
    v = migrations.latest_version()
    later_table = Migration(v + 1, "later_table", """
        CREATE TABLE later_table (id INTEGER PRIMARY KEY, body TEXT NOT NULL) STRICT;
        CREATE TRIGGER later_guard BEFORE DELETE ON later_table BEGIN SELECT 1; SELECT 2; END;
    """)
    broken = Migration(v + 2, "broken", """
        CREATE TABLE half_done (x TEXT) STRICT;
        CREATE TABLE readouts (x TEXT);
    """)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*base, later_table, broken))
    with pytest.raises(StoreError, match=f"migration {v + 2} \\(broken\\).*already exists"):
        Store.open(db)
    with _raw(db) as con:  # the good step stayed, the broken one left no trace
        assert con.execute("PRAGMA user_version").fetchone()[0] == v + 1
        names = {row[0] for row in con.execute("SELECT name FROM sqlite_schema")}
        assert {"later_table", "later_guard"} <= names and "half_done" not in names
    monkeypatch.setattr(migrations, "MIGRATIONS", (*base, later_table))
    with Store.open(db) as store:
        assert store.schema_version() == v + 1 and store.count_readouts() == 1


def test_statements_split_outside_trigger_bodies() -> None:
    sql = "CREATE TABLE a (x); CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; SELECT ';'; END; -- done;\n"
    assert migrations.statements(sql) == [
        "CREATE TABLE a (x);",
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; SELECT ';'; END;",
    ]


# -- opening: read-only, WAL, modes ----------------------------------------------------------


def test_read_only_cannot_write_and_does_not_create_or_migrate(tmp_path: Path, db: Path) -> None:
    missing = tmp_path / "nothing" / "here.db"
    with pytest.raises(StoreError, match="cannot open the database"):
        Store.open(missing, read_only=True)
    assert not missing.parent.exists()
    db.touch()  # an empty file: a writer has not migrated it yet
    with pytest.raises(StoreError, match="schema version 0"):
        Store.open(db, read_only=True)
    with Store.open(db) as writer_store:
        writer_store.save_readout(meter_id="m", readout=_readout(), read_at=T0)
        with Store.open(db, read_only=True) as reader_store:  # reads while the writer is open
            assert reader_store.count_readouts() == 1
            with pytest.raises(StoreError, match="opened read-only"):
                reader_store.save_readout(meter_id="m", readout=_readout(), read_at=T0 + timedelta(1))
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                reader_store._db().execute("DELETE FROM readings")  # even below the API
    assert _counts(db)["readings"] == len(READINGS)


def test_wal_full_sync_and_foreign_keys(db: Path) -> None:
    with Store.open(db) as store:
        con = store._db()
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert con.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert con.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
        assert store.integrity_check() == "ok"
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            con.execute("INSERT INTO readings (readout_id, seq, meter_id, address, text, read_at, "
                        "integrity) VALUES (42, 0, 'm', '1.8.0', '', '', 'ok')")
    with _raw(db) as con:  # WAL is a property of the file, seen by every connection
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_file_and_directory_modes(tmp_path: Path) -> None:
    old = os.umask(0o077)  # explicit modes, not whatever the umask leaves
    try:
        db = tmp_path / "var" / "lib" / "smgw" / "smgw.db"
        with Store.open(db) as store:
            store.save_readout(meter_id="m", readout=_readout(), read_at=T0)
            wal = db.with_name(db.name + "-wal")
            assert stat.S_IMODE(wal.stat().st_mode) == 0o640
        assert stat.S_IMODE(db.stat().st_mode) == 0o640
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o750
        kept = tmp_path / "kept"
        kept.mkdir(mode=0o700)
        Store.open(kept / "smgw.db").close()
        assert stat.S_IMODE(kept.stat().st_mode) == 0o700  # an existing directory is left alone
    finally:
        os.umask(old)


def test_closed_store_says_so(db: Path) -> None:
    store = Store.open(db)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count_readouts()


# -- kill -9 ---------------------------------------------------------------------------------

CHILD_READINGS = 40
CHILD = f"""
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from appliance.store import Store
from reader.models import Identification, LoadProfileInterval, LogbookEntry, Readout, Reading

ident = Identification(text="SIM5SIM-1", manufacturer="SIM", baud_char="5", model="SIM-1")
readings = tuple(Reading(f"1.8.{{i % 5}}", Decimal(i) / 1000, str(Decimal(i) / 1000), "kWh")
                 for i in range({CHILD_READINGS}))
with Store.open(Path(sys.argv[1])) as store:
    print("ready", flush=True)
    while True:
        at = datetime.now(UTC)
        start = at.replace(second=0, microsecond=0)
        profile = tuple(LoadProfileInterval(start=start - timedelta(minutes=j),
                                            values={{"1.5.0": Decimal(j), "2.5.0": None}},
                                            units={{"1.5.0": "kW", "2.5.0": "kW"}}, status="00")
                        for j in range(30))
        logbook = (LogbookEntry(timestamp=at, status="0001", values=("x",)),)
        store.save_readout(meter_id="sim", read_at=at, readout=Readout(
            identification=ident, readings=readings, load_profile=profile, logbook=logbook))
        print(at.isoformat(), flush=True)  # acknowledged: committed, durable
"""


def _check_whole(db: Path) -> set[datetime]:
    with Store.open(db) as store:
        assert store.integrity_check() == "ok"
        stored = {r.read_at for r in store.readouts("sim", T0 - timedelta(days=3650),
                                                     datetime.now(UTC) + timedelta(days=1))}
        assert len(stored) == store.count_readouts()
    with _raw(db) as con:
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        per_readout = con.execute(
            "SELECT r.id, COUNT(g.seq), MIN(g.seq), MAX(g.seq), "
            "(SELECT COUNT(*) FROM logbook l WHERE l.readout_id = r.id) "
            "FROM readouts r LEFT JOIN readings g ON g.readout_id = r.id GROUP BY r.id").fetchall()
        partial = [row for row in per_readout
                   if row[1:] != (CHILD_READINGS, 0, CHILD_READINGS - 1, 1)]
        assert partial == [], f"partial readouts: {partial}"
        assert con.execute("SELECT COUNT(*) FROM load_profile WHERE readout_id NOT IN "
                           "(SELECT id FROM readouts)").fetchone()[0] == 0
        assert con.execute("SELECT meter_id, read_at FROM readouts GROUP BY meter_id, read_at "
                           "HAVING COUNT(*) > 1").fetchall() == []
    return stored


def test_kill_9_at_random_moments_leaves_whole_readouts(db: Path) -> None:
    rng = random.Random(62056)
    acknowledged: set[datetime] = set()
    for children in range(1, 21):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout is not None
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.05))  # sometimes while it starts or opens the file
        else:
            assert child.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.0, 0.06))  # mostly in the middle of storing
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL, err
        acknowledged |= {datetime.fromisoformat(line) for line in out.split() if line != "ready"}
        stored = _check_whole(db)
        assert acknowledged <= stored, "an acknowledged readout was lost"
        assert len(stored) <= len(acknowledged) + children  # at most one unacknowledged each
    assert len(acknowledged) >= 20, "the children should have stored readouts between the kills"
