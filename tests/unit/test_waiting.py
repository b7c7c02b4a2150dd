"""Readouts wait in memory while the database is locked by someone else, and go in afterwards."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance import gateway
from appliance.audit import Auditor
from appliance.audit_chain import MacFunction, sha256_mac
from appliance.gateway import Waiting
from appliance.store import Store
from tests.unit.test_store import _readout

T0 = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


@contextmanager
def unkeyed() -> Iterator[MacFunction]:
    yield sha256_mac


def test_readouts_wait_while_locked_and_are_stored_in_order_afterwards(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("appliance.store.connection.BUSY_TIMEOUT_MS", 200)
    with Store.open(tmp_path / "db") as store:
        auditor = Auditor(store, unkeyed)
        waiting = Waiting()
        other = sqlite3.connect(tmp_path / "db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        for i in range(3):
            waiting.add("m1", _readout(), T0 + timedelta(seconds=30 * i))
            assert waiting.store(store, auditor) == []
        assert len(waiting.items) == 3 and waiting.failing_since == T0
        other.execute("COMMIT")
        other.close()
        stored = waiting.store(store, auditor)
        assert [readout_id for readout_id, _, _ in stored] == [1, 2, 3]
        assert [r.read_at for r in store.readouts("m1", T0, T0 + timedelta(hours=1))] == [
            T0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=60)]
        events = [r.event for r in store.audit_rows("system")]
        assert events == ["store.failing", "store.recovered"]


def test_the_bound_drops_the_oldest_and_counts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "MAX_WAITING", 2)
    waiting = Waiting()
    for i in range(3):
        waiting.add("m1", _readout(), T0 + timedelta(seconds=i))
    assert [at for _, _, at, _ in waiting.items] == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert waiting.dropped == 1
