"""The Auditor keeps a service running when its log cannot be written, and a flood summarised."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import appliance.audit as audit_mod
from appliance.audit import Auditor
from appliance.audit_chain import MacFunction, sha256_mac, verify
from appliance.store import Store
from pki.token import TokenError


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FlakyToken:
    """A MAC source that fails while ``gone`` is set, like a token pulled out of its reader."""

    def __init__(self) -> None:
        self.gone = False

    @contextmanager
    def __call__(self) -> Iterator[MacFunction]:
        if self.gone:
            raise TokenError("token 'smgw': no such token")
        yield sha256_mac


def test_rows_wait_while_the_token_is_gone_and_go_in_order_afterwards(tmp_path: Path) -> None:
    token = FlakyToken()
    with Store.open(tmp_path / "db") as store:
        auditor = Auditor(store, token)
        token.gone = True
        assert auditor.record("consumer", "delivery.sent", {"n": 1}, consumer="m1") is False
        assert auditor.record("consumer", "delivery.sent", {"n": 2}, consumer="m1") is False
        assert auditor.waiting == 2 and store.audit_rows("consumer") == []
        token.gone = False
        assert auditor.record("consumer", "delivery.sent", {"n": 3}, consumer="m1") is True
        rows = store.audit_rows("consumer")
    assert [json.loads(r.detail)["n"] for r in rows] == [1, 2, 3]
    assert verify("consumer", rows, sha256_mac) == []


def test_an_overflowing_queue_is_counted_not_silently_dropped(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_mod, "PENDING_MAX", 3)
    token = FlakyToken()
    with Store.open(tmp_path / "db") as store:
        auditor = Auditor(store, token)
        token.gone = True
        for n in range(5):
            auditor.record("calibration", "integrity.failed", {"n": n})
        token.gone = False
        auditor.flush()
        lost = store.audit_rows("system")
        kept = store.audit_rows("calibration")
    assert [json.loads(r.detail)["n"] for r in kept] == [2, 3, 4]
    assert [(r.event, json.loads(r.detail)["rows"]) for r in lost] == [("log.lost", 2)]


def test_a_flood_of_one_event_becomes_one_summary_row(tmp_path: Path) -> None:
    clock = Clock()
    with Store.open(tmp_path / "db") as store:
        auditor = Auditor(store, FlakyToken(), rate_per_s=2.0, clock=clock)
        for _ in range(1000):
            auditor.record("system", "gatewatcher.refused", {"reason": "garbage"})
        written = len(store.audit_rows("system"))
        assert written == 10  # the burst: five seconds' worth
        clock.t += 1.0  # the flood is over; the next row brings the summary
        auditor.record("system", "gatewatcher.accepted", {})
        rows = store.audit_rows("system")
    summary = [json.loads(r.detail) for r in rows if r.event == "log.suppressed"]
    assert summary and summary[0]["event"] == "gatewatcher.refused" and summary[0]["rows"] == 990
    assert rows[-1].event == "gatewatcher.accepted"


def test_consumer_rows_are_never_rate_limited(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        auditor = Auditor(store, FlakyToken(), rate_per_s=1.0, clock=Clock())
        for n in range(50):
            auditor.record("consumer", "delivery.sent", {"n": n}, consumer="m1",
                           at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        assert len(store.audit_rows("consumer")) == 50
