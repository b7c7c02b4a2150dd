"""The GateWatcher's decision: every refusal of ISSUE 7 by name, and only accepted messages
enter the replay cache (which survives a restart)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from appliance.gatewatcher import Accepted, Refused, TokenBucket, judge
from appliance.store import Store
from pki.ca import CertificateAuthority, init_ca
from pki.cms import software_signer
from pki.wakeup import MAX_DATAGRAM, WakeupFormatError, encode, new_body, parse_body
from tests.pkihelpers import PASS

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)  # re-read per test by the fixture: a suite can run long


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    global NOW
    NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, object]:
    init_ca(tmp_path / "ca", passphrase=PASS, profile="modern")
    ca = CertificateAuthority(tmp_path / "ca", PASS)
    init_ca(tmp_path / "other", passphrase=PASS, profile="modern")
    other = CertificateAuthority(tmp_path / "other", PASS)
    wake, wake_key = ca.issue_generated("gwa-wakeup", "gwa.example")
    return {"ca": ca, "other": other, "wake": wake, "key": wake_key, "db": tmp_path / "smgw.db"}


def _msg(w: dict[str, object], action: str = "wakeup", *, gateway: str = "gw-0001", sequence: int = 1,
         now: dt.datetime | None = None, cert: object = None, key: object = None) -> bytes:
    return encode(new_body(gateway, action, sequence, now or NOW), cert or w["wake"],  # type: ignore[arg-type]
                  software_signer(key or w["key"]))  # type: ignore[arg-type]


def _judge(w: dict[str, object], datagram: bytes, store: Store, now: dt.datetime | None = None) -> Accepted | Refused:
    ca: CertificateAuthority = w["ca"]  # type: ignore[assignment]
    return judge(datagram, gateway_id="gw-0001", root=ca.cert, crl=ca.crl(), now=now or NOW, window_s=60,
                 store=store)


def test_accepts_a_valid_wakeup_once_also_across_a_restart(world: dict[str, object]) -> None:
    message = _msg(world)
    with Store.open(world["db"]) as store:  # type: ignore[arg-type]
        decision = _judge(world, message, store)
        assert isinstance(decision, Accepted) and decision.body.action == "wakeup"
        again = _judge(world, message, store)
        assert isinstance(again, Refused) and "replayed: nonce" in again.reason
    with Store.open(world["db"]) as store:  # type: ignore[arg-type]  # the gateway restarted
        again = _judge(world, message, store)
        assert isinstance(again, Refused) and "replayed" in again.reason
        older = _judge(world, _msg(world, "breakup", sequence=1), store)  # fresh nonce, old sequence
        assert isinstance(older, Refused) and "sequence 1 is not above" in older.reason
        assert isinstance(_judge(world, _msg(world, "breakup", sequence=2), store), Accepted)


def test_every_refusal_names_its_reason(world: dict[str, object]) -> None:
    ca: CertificateAuthority = world["ca"]  # type: ignore[assignment]
    other: CertificateAuthority = world["other"]  # type: ignore[assignment]
    party, party_key = ca.issue_generated("party-tls", "dso.example")
    foreign, foreign_key = other.issue_generated("gwa-wakeup", "gwa.example")
    revoked, revoked_key = ca.issue_generated("gwa-wakeup", "old-gwa.example")
    ca.revoke(f"{revoked.serial_number:x}", "key-compromise")
    good = _msg(world, sequence=50)
    tampered = bytearray(good)
    tampered[good.index(b'"gw-0001"') + 3] ^= 0x01
    cases = {
        "bad signature": (bytes(tampered), "BadSignatureError"),
        "another CA": (_msg(world, cert=foreign, key=foreign_key), "UnknownSignerError"),
        "a party key": (_msg(world, cert=party, key=party_key), "RoleError"),
        "revoked signer": (_msg(world, cert=revoked, key=revoked_key), "RevokedError"),
        "another gateway": (_msg(world, gateway="gw-0002"), "addressed to gateway gw-0002"),
        "stale": (_msg(world, now=NOW - dt.timedelta(seconds=61)), "stale"),
        "future": (_msg(world, now=NOW + dt.timedelta(seconds=61)), "future"),
        "truncated": (good[: len(good) // 2], "MalformedError"),
        "garbage": (os.urandom(300), "MalformedError"),
        "oversized": (good + b"\0" * MAX_DATAGRAM, "cap"),
    }
    with Store.open(world["db"]) as store:  # type: ignore[arg-type]
        for name, (datagram, reason) in cases.items():
            decision = _judge(world, datagram, store)
            assert isinstance(decision, Refused), name
            assert reason in decision.reason, (name, decision.reason)
        # none of the refused ones used up a sequence: the good one still passes
        assert isinstance(_judge(world, good, store), Accepted)


@pytest.mark.parametrize(("body", "what"), [
    (b'{"gateway_id":"gw-0001","action":"reboot","issued_at":"2026-01-01T00:00:00Z","nonce":"' + b"0" * 32
     + b'","sequence":1}', "action"),
    (b'{"gateway_id":"gw-0001","action":"wakeup","issued_at":"2026-01-01T00:00:00Z","nonce":"' + b"0" * 32
     + b'","sequence":1,"to":"203.0.113.9"}', "exactly"),
    (b'{"gateway_id":"gw 1","action":"wakeup","issued_at":"2026-01-01T00:00:00Z","nonce":"' + b"0" * 32
     + b'","sequence":1}', "gateway_id"),
    (b'{"gateway_id":"gw-0001","action":"wakeup","issued_at":"2026-13-01T00:00:00Z","nonce":"' + b"0" * 32
     + b'","sequence":1}', "issued_at"),
    ((b'{"gateway_id":"gw-0001","action":"wakeup","issued_at":"2026-01-01T00:00:00Z","nonce":"xyz",'
     b'"sequence":1}'), "nonce"),
    (b'{"gateway_id":"gw-0001","action":"wakeup","issued_at":"2026-01-01T00:00:00Z","nonce":"' + b"0" * 32
     + b'","sequence":true}', "sequence"),
    (b"\xff\xfe", "JSON"),
])
def test_body_shape_is_exact(body: bytes, what: str) -> None:
    """Notably: a body naming a destination is refused, the destination is never taken from it."""
    with pytest.raises(WakeupFormatError, match=what):
        parse_body(body)


def test_token_bucket_bounds_the_work() -> None:
    clock = [0.0]
    bucket = TokenBucket(rate=10, burst=10, clock=lambda: clock[0])
    assert sum(bucket.take() for _ in range(1000)) == 10
    clock[0] = 1.0
    assert sum(bucket.take() for _ in range(1000)) == 10
