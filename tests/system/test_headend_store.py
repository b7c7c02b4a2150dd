"""The headend's one database layer on both engines: idempotent by delivery id, the read API's
queries, several ingest processes on one database, and a dropped PostgreSQL connection that
costs one 503 (the sender retries) and is made again for the next request."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from headend.document import Delivery, Value
from headend.ingest import IngestContext, ingest
from headend.store import HeadendStore, HeadendStoreError
from tests.headendhelpers import count_transactions

T0 = dt.datetime(2026, 11, 25, 10, tzinfo=dt.UTC)


def _delivery(n: int, subject: str = "37155794") -> Delivery:
    start = T0 + dt.timedelta(hours=n)
    return Delivery(delivery_id=uuid.uuid4().hex, gateway="gw-0001", subject=subject, identity="meter_id",
                    party="dso", profile="dso-rt", resolution=3, window_from=start,
                    window_to=start + dt.timedelta(hours=1), created_at=start,
                    values=(Value("1.8.0", "kWh", start, start + dt.timedelta(minutes=15), Decimal("4417.218") + n),
                            Value("1.8.0", "kWh", start + dt.timedelta(minutes=15), start + dt.timedelta(minutes=30),
                                  None)))


def test_store_is_idempotent_and_reads_back_exact_values(headend_database: Callable[[str], str]) -> None:
    store = HeadendStore(headend_database("dso"))
    first = _delivery(0)
    assert store.store(first, "2026-11-25T11:00:00Z") is True
    assert store.store(first, "2026-11-25T11:05:00Z") is False  # the second copy stores nothing
    assert store.store(_delivery(1, subject="ps-other"), "2026-11-25T12:00:00Z") is True
    assert store.count() == 2 and store.value_count() == 4
    rows = store.readings("37155794", "2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z")
    assert [(r["value"], r["from"]) for r in rows] == [("4417.218", "2026-11-25T10:00:00Z"),
                                                       (None, "2026-11-25T10:15:00Z")]
    one = store.delivery(first.delivery_id)
    assert one is not None and one["received_at"] == "2026-11-25T11:00:00Z"
    assert store.delivery("0" * 32) is None
    store.close()


def _writer(url: str, n: int, done: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = HeadendStore(url)
    done.put(sum(store.store(_delivery(1000 * n + i), "2026-11-25T11:00:00Z") for i in range(50)))
    store.close()


def test_several_processes_share_one_database(headend_database: Callable[[str], str]) -> None:
    url = headend_database("dso")
    HeadendStore(url).close()
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, n, done)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    assert sorted(done.get(timeout=5) for _ in procs) == [50, 50, 50, 50]
    store = HeadendStore(url)
    assert store.count() == 200 and store.value_count() == 400
    store.close()


@pytest.mark.parametrize("headend_database", ["postgresql"], indirect=True)
def test_a_dropped_connection_costs_one_503_and_is_made_again(headend_database: Callable[[str], str]) -> None:
    import psycopg

    url = headend_database("dso")
    store = HeadendStore(url)
    pid = store._con.info.backend_pid
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(HeadendStoreError, match="PostgreSQL"):
        store.store(_delivery(0), "2026-11-25T11:00:00Z")
    ctx = IngestContext(party="dso", root=None, crl=None, enc_cert=None, agree=None,  # type: ignore[arg-type]
                        peer_cn=lambda ip: None, store=store)
    assert ingest(ctx, b"x" * (2 << 20), "10.0.0.2", T0)[0] == 413  # unrelated refusals stay 4xx
    assert store.store(_delivery(1), "2026-11-25T11:00:00Z") is True  # a fresh connection
    assert store.count() == 1
    store.close()


def test_a_batch_is_one_transaction_and_stores_each_id_once(headend_database: Callable[[str], str]) -> None:
    """The ingest loop's group commit: forty deliveries, each twice in the same batch, go in
    one transaction; each id is stored once and only its first copy hears "stored"; the
    same batch again stores nothing."""
    store = HeadendStore(headend_database("dso"))
    deliveries = [_delivery(n) for n in range(40)]
    transactions = count_transactions(store)
    twice = [(d, "2026-11-25T11:00:00Z") for d in deliveries + deliveries]
    assert store.store_many(twice) == [True] * 40 + [False] * 40
    assert transactions[0] == 1
    assert store.count() == 40 and store.value_count() == 80
    assert store.store_many(twice) == [False] * 80
    assert store.count() == 40 and store.value_count() == 80
    store.close()


def test_a_failed_batch_stores_none_of_it_and_the_next_one_stores(
        headend_database: Callable[[str], str]) -> None:
    """All or nothing: a delivery the batch could not store takes the others' rows back with
    it (none of them is acknowledged, so none may be kept half), and the store is not stuck."""
    store = HeadendStore(headend_database("dso"))
    insert = store._insert
    poisoned = _delivery(0)

    def failing_insert(cur: object, delivery: Delivery, received_at: str) -> bool:
        if delivery.delivery_id == poisoned.delivery_id:
            raise RuntimeError("a bug in the insert")
        return insert(cur, delivery, received_at)

    store._insert = failing_insert  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="a bug"):
        store.store_many([(_delivery(1), "2026-11-25T11:00:00Z"), (poisoned, "2026-11-25T11:00:00Z")])
    assert store.count() == 0  # rolled back, the first delivery's rows too
    assert store.store(_delivery(2), "2026-11-25T11:00:00Z") is True
    assert store.count() == 1
    store.close()


def test_workers_starting_while_another_holds_the_database_wait_their_turn(tmp_path: Path) -> None:
    """A worker started (or restarted) while another has the SQLite file locked waits for
    it while it sets the store up, instead of exiting with "database is locked" (which
    stopped the whole headend at start)."""
    import sqlite3
    import threading

    url = f"sqlite:///{tmp_path}/ingest.db"
    HeadendStore(url).close()
    other = sqlite3.connect(tmp_path / "ingest.db", isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO deliveries SELECT * FROM deliveries WHERE 0")  # takes the lock now
    threading.Timer(0.5, other.close).start()  # (exclusive locking mode: held until closed)
    store = HeadendStore(url)  # waits, then sets up
    assert store.store(_delivery(0), "2026-11-25T11:00:00Z") is True
    store.close()
    other.close()
