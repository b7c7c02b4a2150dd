"""Processor -> outbox -> sender -> the real ingest HTTP server (loopback) -> headend store:
acknowledged once, in order, idempotent; forged, mis-addressed and wrong-tunnel deliveries refused."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliance.audit_chain import sha256_mac
from appliance.processor import SealKit, process
from appliance.profiles import AccessProfile
from appliance.sender import Route, post, send_due
from appliance.store import Store
from headend.ingest import IngestContext, serve_reads
from headend.ingest_server import serve
from headend.store import HeadendStore
from pki.ca import CertificateAuthority, init_ca
from pki.cms import sign, software_signer, verify
from pki.cms_envelope import decrypt, encrypt, software_agreement
from tests.pkihelpers import PASS
from tests.unit.test_processor import START, _readout


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, object]]:
    init_ca(tmp_path / "ca", passphrase=PASS, profile="modern")
    ca = CertificateAuthority(tmp_path / "ca", PASS)
    sig, sig_key = ca.issue_generated("gateway-sig", "gw-0001")
    enc, enc_key = ca.issue_generated("party-enc", "dso.example")
    store = Store.open(tmp_path / "smgw.db")
    for minute in range(16):
        store.save_readout(meter_id="37155794", readout=_readout(minute), read_at=START + dt.timedelta(minutes=minute))
    headend = HeadendStore(f"sqlite:///{tmp_path}/headend.db")
    peers = {"127.0.0.1": "gw-0001"}
    ctx = IngestContext(party="dso", root=ca.cert, crl=ca.crl(), enc_cert=enc, agree=software_agreement(enc_key),
                        peer_cn=peers.get, store=headend)
    server = serve(ctx, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kit = SealKit(gateway_id="gw-0001", sig_cert=sig, signer=software_signer(sig_key), enc_certs={"dso": enc},
                  pseudonym=lambda party, meter: "ps-x")
    yield {"tmp": tmp_path, "agree": software_agreement(enc_key), "ca": ca, "store": store, "headend": headend, "kit": kit, "peers": peers, "enc": enc,
           "route": Route("dso", "127.0.0.1", server.server_address[1], None)}
    server.shutdown()
    headend.close()
    store.close()



def _queued(world: dict[str, object], minutes: int) -> int:
    """Readouts from START processed for the DSO's one-minute profile, sent every 2 minutes, up
    to ``minutes`` later; how many deliveries that queued in the outbox."""
    store: Store = world["store"]  # type: ignore[assignment]
    profile = AccessProfile(name="dso-rt", party="dso", values=["1.8.0"], interval_s=60, send_every_s=120)
    process([profile], store, world["kit"], "37155794", START)  # type: ignore[arg-type]
    return process([profile], store, world["kit"], "37155794", START + dt.timedelta(minutes=minutes))  # type: ignore[arg-type]


@contextmanager
def _unkeyed() -> Iterator[Callable[[bytes], bytes]]:
    """Consumer-log rows sealed with plain SHA-256 (no token in these tests)."""
    yield sha256_mac

def test_deliveries_arrive_once_in_order_and_are_refused_when_forged(world: dict[str, object]) -> None:
    store: Store = world["store"]  # type: ignore[assignment]
    route: Route = world["route"]  # type: ignore[assignment]
    headend: HeadendStore = world["headend"]  # type: ignore[assignment]
    assert _queued(world, 10) == 5
    rng = random.Random(1)
    first = store.next_pending("dso")
    assert first is not None
    assert send_due(store, route, START + dt.timedelta(minutes=10), rng) == 5
    assert store.pending_count("dso") == 0 and headend.count() == 5
    # a replayed delivery (or one sent again after its answer was lost): refused naming its id, stored once
    status, doc = post(route, first.payload, 5)
    assert (status, doc["delivery_id"], doc["stored"]) == (409, first.delivery_id, False) and headend.count() == 5
    assert "stored already" in str(doc["error"])
    values = headend.readings("37155794", "2026-11-25T08:00:00Z", "2026-11-25T08:10:00Z")
    assert [v["value"] for v in values][:2] == ["4417.218", "4417.231"]  # last of each minute, truncated
    # the same document signed by a key outside the PKI
    tmp: Path = world["tmp"]  # type: ignore[assignment]
    init_ca(tmp / "rogue", passphrase=PASS, profile="modern")
    rogue = CertificateAuthority(tmp / "rogue", PASS)
    fake, fake_key = rogue.issue_generated("gateway-sig", "gw-0001")
    forged = encrypt(sign(b"{}", fake, software_signer(fake_key)), world["enc"])  # type: ignore[arg-type]
    status, doc = post(route, forged, 5)
    assert status == 403 and "UnknownSignerError" in str(doc["error"])
    # garbage and a tampered ciphertext: 400, never 500
    status, doc = post(route, b"\x30\x03\x02\x01\x01", 5)
    assert status == 400
    tampered = bytearray(first.payload)
    tampered[-20] ^= 1
    assert post(route, bytes(tampered), 5)[0] == 400
    # mis-addressed: properly signed and encrypted for this party, but naming another one
    import dataclasses

    from headend.document import build, parse

    kit: SealKit = world["kit"]  # type: ignore[assignment]
    content = parse(verify(decrypt(first.payload, world["enc"], world["agree"]), root=world["ca"].cert)[0])  # type: ignore[arg-type, attr-defined]
    other = dataclasses.replace(content, party="supplier", delivery_id="f" * 32)
    status, doc = post(route, encrypt(sign(build(other), kit.sig_cert, kit.signer), world["enc"]), 5)  # type: ignore[arg-type]
    assert status == 422 and "addressed to party supplier" in str(doc["error"])
    # the right signature, sent through another gateway's tunnel
    world["peers"]["127.0.0.1"] = "gw-0002"  # type: ignore[index]
    status, doc = post(route, first.payload, 5)
    assert status == 403 and "tunnel of gw-0002" in str(doc["error"])
    # a tunnel address the server's client list does not hold yet (it lags a reconnect): try again, not refused
    del world["peers"]["127.0.0.1"]  # type: ignore[attr-defined]
    status, doc = post(route, first.payload, 5)
    assert status == 503 and "not known yet" in str(doc["error"])


def _request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, object, str | None]:
    """(status, JSON body or raw bytes, the Connection header)."""
    import http.client
    import json

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=body or None)
        reply = connection.getresponse()
        data = reply.read()
        try:
            doc: object = json.loads(data)
        except ValueError:
            doc = data
        return reply.status, doc, reply.getheader("Connection")
    finally:
        connection.close()


def test_readings_are_read_beside_the_tunnels_never_through_them(world: dict[str, object],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    store: Store = world["store"]  # type: ignore[assignment]
    route: Route = world["route"]  # type: ignore[assignment]
    headend: HeadendStore = world["headend"]  # type: ignore[assignment]
    _queued(world, 4)
    assert send_due(store, route, START + dt.timedelta(minutes=4), random.Random(4)) == 2
    delivery_id = headend.delivery_ids()[0]
    readings = "/v1/meters/37155794/readings?from=2026-11-25T08:00:00Z"
    # the ingest (the tunnel side: every gateway reaches it) answers no read at all, and
    # closes the connection (a body the GET carried is not read, so it cannot become a request)
    for path in (readings, f"/v1/deliveries/{delivery_id}"):
        status, doc, connection = _request(route.port, "GET", path)
        assert status == 404 and "nothing is read inside the tunnels" in str(doc) and connection == "close", doc
    for method in ("HEAD", "PUT", "OPTIONS", "DELETE"):
        assert _request(route.port, method, readings)[:3:2] == (405, "close")
    with caplog.at_level(logging.WARNING, logger="smgw.headend"), socket.create_connection(("127.0.0.1", route.port)) as raw:
        raw.sendall(b"GET /v1/meters/x\x1b[2J/readings HTTP/1.1\r\nHost: h\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 400 ")  # a control character is no target (RFC 9112)
    assert "\\x1b" in caplog.text and "\x1b" not in caplog.text  # logged escaped, never raw
    reads = serve_reads(headend, "127.0.0.1", 0)
    threading.Thread(target=reads.serve_forever, daemon=True).start()
    try:
        port = reads.server_address[1]
        status, values, _ = _request(port, "GET", readings)
        assert status == 200 and [v["value"] for v in values][:2] == ["4417.218", "4417.231"]  # type: ignore[index]
        status, one, _ = _request(port, "GET", f"/v1/deliveries/{delivery_id}")
        assert status == 200 and one["delivery_id"] == delivery_id  # type: ignore[index]
        assert _request(port, "GET", "/v1/deliveries/" + "0" * 32)[0] == 404
        assert _request(port, "GET", "/v1/meters/37155794/readings?from=1%27%20OR%201=1")[0] == 400
        # and the read side takes no deliveries
        status, doc, connection = _request(port, "POST", "/v1/deliveries", b"x")
        assert status == 405 and "come through the tunnels" in str(doc) and connection == "close"
    finally:
        reads.shutdown()
    assert headend.count() == 2


def test_an_unreachable_headend_keeps_the_delivery_and_backs_off(world: dict[str, object]) -> None:
    store: Store = world["store"]  # type: ignore[assignment]
    _queued(world, 4)
    dead = Route("dso", "127.0.0.1", 9, None)  # discard port: connection refused
    now = START + dt.timedelta(minutes=4)
    assert send_due(store, dead, now, random.Random(2)) == 0
    item = store.next_pending("dso")
    assert item is not None and item.attempts == 1 and item.next_attempt_at > now
    assert send_due(store, world["route"], now, random.Random(2)) == 0  # type: ignore[arg-type]  # not due yet
    assert send_due(store, world["route"], item.next_attempt_at, random.Random(2)) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(("answer", "reason"), [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "no complete HTTP answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + b"x" * 70000, "over 65536 bytes"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{", "no complete HTTP answer"),  # cut short
    (b"", "closed the connection before it answered"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n\r\n" + b"[" * 60000, "not JSON"),  # the parser's recursion
    ("dribble", "did not answer in time"),  # a byte at a time, each within a read's timeout
])
def test_a_headend_answering_nonsense_keeps_the_delivery_with_the_reason(world: dict[str, object],
                                                                          answer: bytes | str, reason: str) -> None:
    store: Store = world["store"]  # type: ignore[assignment]
    _queued(world, 4)
    impostor = socket.create_server(("127.0.0.1", 0))

    def answer_once() -> None:
        conn, _ = impostor.accept()
        with conn:
            conn.settimeout(0.3)
            with contextlib.suppress(TimeoutError):
                while conn.recv(65536):  # the whole request, so the close is no reset
                    pass
            if isinstance(answer, bytes):
                conn.sendall(answer)
                return
            with contextlib.suppress(OSError):
                for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                    conn.send(bytes([byte]))
                    time.sleep(0.1)

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    now = START + dt.timedelta(minutes=4)
    try:
        started = time.monotonic()
        assert send_due(store, Route("dso", "127.0.0.1", impostor.getsockname()[1], None), now, random.Random(4),
                        timeout=2) == 0
        assert time.monotonic() - started < 4
    finally:
        thread.join(5)
        impostor.close()
    item = store.next_pending("dso")
    assert item is not None and item.attempts == 1 and item.next_attempt_at > now
    error = store._db().execute("SELECT last_error FROM outbox WHERE id = ?", (item.id,)).fetchone()[0]
    assert reason in error, error
    assert send_due(store, world["route"], item.next_attempt_at, random.Random(4)) == 2  # type: ignore[arg-type]


def test_a_copy_of_a_stored_delivery_is_refused_and_logged_and_that_answer_acknowledges_it(
        world: dict[str, object], caplog: pytest.LogCaptureFixture) -> None:
    """The headend cannot tell a replay from a copy sent again because the first answer was
    lost: it refuses both (409, logged, nothing stored), naming the id, and the gateway's
    outbox takes that as the acknowledgement it missed."""
    from appliance.sender import _held

    store: Store = world["store"]  # type: ignore[assignment]
    route: Route = world["route"]  # type: ignore[assignment]
    headend: HeadendStore = world["headend"]  # type: ignore[assignment]
    assert _queued(world, 4) == 2
    first = store.next_pending("dso")
    assert first is not None
    assert post(route, first.payload, 5)[0] == 200  # stored, but the gateway never heard the answer
    with caplog.at_level(logging.WARNING, logger="smgw.headend"):
        replayed = post(route, first.payload, 5)
        assert send_due(store, route, START + dt.timedelta(minutes=4), random.Random(5), macs=_unkeyed) == 2
    assert replayed[0] == 409 and replayed[1]["delivery_id"] == first.delivery_id
    assert headend.count() == 2 and store.pending_count("dso") == 0 and store.refused_count("dso") == 0
    refusals = [r.getMessage() for r in caplog.records if "stored already" in r.getMessage()]
    assert len(refusals) == 2 and all(first.delivery_id in m and "refused delivery" in m for m in refusals)
    sent = [r for r in store.audit_rows("consumer") if r.event == "delivery.sent"]
    assert len(sent) == 2 and first.delivery_id in sent[0].detail
    # another gateway's delivery under that id is refused without being called held: its sender sets it aside
    import dataclasses

    from headend.document import build, parse

    other_sig, other_key = world["ca"].issue_generated("gateway-sig", "gw-0002")  # type: ignore[attr-defined]
    content = parse(verify(decrypt(first.payload, world["enc"], world["agree"]), root=world["ca"].cert)[0])  # type: ignore[arg-type, attr-defined]
    theirs = dataclasses.replace(content, gateway="gw-0002")
    world["peers"]["127.0.0.1"] = "gw-0002"  # type: ignore[index]
    status, doc = post(route, encrypt(sign(build(theirs), other_sig, software_signer(other_key)), world["enc"]), 5)  # type: ignore[arg-type]
    assert status == 409 and "another gateway's delivery" in str(doc["error"]) and "stored" not in doc
    assert not _held(status, doc, first.delivery_id) and headend.count() == 2


@pytest.mark.parametrize(("status", "doc", "held"), [
    (200, {"delivery_id": "a" * 32, "stored": True}, True),
    (409, {"delivery_id": "a" * 32, "stored": False, "error": "stored already"}, True),
    (409, {"delivery_id": "b" * 32, "stored": False}, False),  # another delivery's answer
    (409, {"delivery_id": "a" * 32}, False),  # a conflict that does not say the copy is held
    (409, {"error": "conflict"}, False),
    (200, {"delivery_id": "b" * 32, "stored": True}, False),
])
def test_only_an_answer_naming_the_delivery_as_held_acknowledges_it(status: int, doc: dict[str, object],
                                                                    held: bool) -> None:
    from appliance.sender import _held

    assert _held(status, doc, "a" * 32) is held


def test_a_delivery_refused_for_good_is_set_aside_and_the_queue_goes_on(world: dict[str, object]) -> None:

    store: Store = world["store"]  # type: ignore[assignment]
    assert _queued(world, 6) == 3
    # the oldest one is sealed for another party: the headend answers 422, and will every time
    first = store.next_pending("dso")
    assert first is not None
    kit: SealKit = world["kit"]  # type: ignore[assignment]
    store._db().execute("UPDATE outbox SET payload = ? WHERE id = ?",
                        (encrypt(sign(b'{"version": 99}', kit.sig_cert, kit.signer), world["enc"]), first.id))  # type: ignore[arg-type]
    now = START + dt.timedelta(minutes=6)
    assert send_due(store, world["route"], now, random.Random(3), macs=_unkeyed) == 2  # type: ignore[arg-type]
    assert store.pending_count("dso") == 0 and store.refused_count("dso") == 1
    refused = store.audit_last("system", "delivery.refused")
    assert refused is not None and first.delivery_id in refused.detail and "HTTP 422" in refused.detail
    consumer = [r for r in store.audit_rows("consumer") if r.event == "delivery.sent"]
    assert len(consumer) == 2 and first.delivery_id not in "".join(r.detail for r in consumer)


def test_the_client_list_is_read_again_when_the_server_rewrites_it(tmp_path: Path) -> None:
    import os
    import time

    from headend.ingest import status_file_peers

    status = tmp_path / "status.txt"
    status.write_text("CLIENT_LIST\tgw-0001\t192.0.2.2:1194\t10.81.0.2\n")
    lookup = status_file_peers(status)
    assert lookup("10.81.0.2") == "gw-0001" and lookup("10.81.0.3") is None
    # gw-0001 reconnected elsewhere; its old address went to gw-0002
    status.write_text("CLIENT_LIST\tgw-0002\t192.0.2.3:1194\t10.81.0.2\n")
    later = time.time_ns() + 10**9
    os.utime(status, ns=(later, later))
    assert lookup("10.81.0.2") == "gw-0002"


def test_an_unreadable_client_list_is_logged_once_not_swallowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from headend.ingest import status_file_peers

    status = tmp_path / "status.txt"
    status.mkdir()  # reading it fails as an unreadable file would (root reads every file)
    lookup = status_file_peers(status)
    with caplog.at_level(logging.ERROR, logger="smgw.headend"):
        assert lookup("10.81.0.2") is None and lookup("10.81.0.2") is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "client list" in errors[0] and str(status) in errors[0], errors
    status.rmdir()
    status.write_text("CLIENT_LIST\tgw-0001\t192.0.2.2:1194\t10.81.0.2\n")
    assert lookup("10.81.0.2") == "gw-0001"
