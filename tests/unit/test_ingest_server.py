"""The ingest's event loop (headend/ingest_server.py) over real loopback sockets: deliveries
that arrive together are stored in one transaction and each answered only after it; a
pipelined connection is answered in order; bad HTTP is refused and the connection closed; a
bug or a failed commit costs an answer, not the loop; a client that does not read its
answers does not hold up the others; idle connections and the connection cap."""

from __future__ import annotations

import datetime as dt
import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from headend import ingest_server
from headend.document import Delivery, Value, build
from headend.ingest import MAX_BODY, IngestContext
from headend.ingest_server import IngestServer
from headend.store import HeadendStore
from pki.ca import CertificateAuthority, init_ca
from pki.cms import sign, software_signer
from pki.cms_envelope import encrypt, software_agreement
from tests.pkihelpers import PASS

START = dt.datetime(2026, 11, 25, 8, tzinfo=dt.UTC)


@dataclass
class World:
    server: IngestServer
    store: HeadendStore
    seal: object  # () -> a fresh sealed delivery
    transactions: list[int]

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture(scope="module")
def sealer(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    folder = tmp_path_factory.mktemp("ca")
    init_ca(folder / "ca", passphrase=PASS, profile="modern")
    ca = CertificateAuthority(folder / "ca", PASS)
    sig, sig_key = ca.issue_generated("gateway-sig", "gw-0001")
    enc, enc_key = ca.issue_generated("party-enc", "dso.example")
    signer = software_signer(sig_key)

    def seal(n: int = 0) -> bytes:
        start = START + dt.timedelta(hours=n)
        doc = build(Delivery(delivery_id=uuid.uuid4().hex, gateway="gw-0001", subject="37155794",
                             identity="meter_id", party="dso", profile="dso-rt", resolution=3, window_from=start,
                             window_to=start + dt.timedelta(minutes=15), created_at=start,
                             values=(Value("1.8.0", "kWh", start, start + dt.timedelta(minutes=15),
                                           Decimal("4417.218") + n),)))
        return encrypt(sign(doc, sig, signer), enc, aead=True)

    return seal, (ca, enc, enc_key)


@pytest.fixture
def world(tmp_path: Path, sealer: tuple[object, object]) -> Iterator[World]:
    seal, (ca, enc, enc_key) = sealer
    store = HeadendStore(f"sqlite:///{tmp_path}/headend.db")
    transactions = [0]
    begin = store._begin

    def counting_begin(cur: object, wait: bool = True) -> None:
        transactions[0] += 1
        begin(cur, wait)

    store._begin = counting_begin  # type: ignore[method-assign]
    ctx = IngestContext(party="dso", root=ca.cert, crl=ca.crl(), enc_cert=enc,  # type: ignore[attr-defined]
                        agree=software_agreement(enc_key), peer_cn=lambda ip: "gw-0001", store=store)  # type: ignore[arg-type]
    server = IngestServer(ctx, "127.0.0.1", 0)
    yield World(server, store, seal, transactions)
    server.shutdown()
    server.server_close()
    store.close()


def _post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /v1/deliveries HTTP/1.1\r\nHost: headend\r\nContent-Type: application/cms\r\n"
            b"Content-Length: %d\r\n%b\r\n%b" % (len(body), extra, body))


def _answers(sock: socket.socket, count: int, timeout: float = 10) -> list[tuple[int, dict[str, object], bool]]:
    """``count`` HTTP answers read off ``sock``: (status, JSON body, Connection: close)."""
    sock.settimeout(timeout)
    data, pos, out = bytearray(), 0, []
    while len(out) < count:
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end >= 0:
            head = data[pos:head_end].decode()
            length = int(next(line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length")))
            if len(data) >= head_end + 4 + length:
                body = data[head_end + 4:head_end + 4 + length]
                out.append((int(head.split(" ")[1]), json.loads(body), "connection: close" in head.lower()))
                pos = head_end + 4 + length
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {count} answers")
        data += chunk
    return out


def _closed(sock: socket.socket, timeout: float = 5) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_deliveries_arriving_together_are_one_transaction_and_answered_after_it(world: World) -> None:
    """Four senders' complete requests wait before the loop runs: one turn reads them all,
    one commit stores them all, and each sender hears its own id."""
    bodies = [world.seal(n) for n in range(4)]  # type: ignore[operator]
    socks = [socket.create_connection(("127.0.0.1", world.port)) for _ in bodies]
    for sock, body in zip(socks, bodies, strict=True):
        sock.sendall(_post(body))
    time.sleep(0.2)
    before = world.transactions[0]
    world.start()
    answers = [_answers(sock, 1)[0] for sock in socks]
    assert [a[0] for a in answers] == [200] * 4 and all(a[1]["stored"] is True for a in answers)
    assert len({a[1]["delivery_id"] for a in answers}) == 4
    assert world.store.count() == 4
    assert world.transactions[0] - before == 1
    for sock in socks:
        sock.close()


def test_a_pipelined_connection_is_answered_in_order_and_a_copy_is_not_stored_twice(world: World) -> None:
    world.start()
    first, second = world.seal(1), world.seal(2)  # type: ignore[operator]
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(_post(first) + _post(second) + _post(first))
        answers = _answers(sock, 3)
    assert [(status, doc["stored"], close) for status, doc, close in answers] == [
        (200, True, False), (200, True, False), (200, False, False)]
    assert answers[0][1]["delivery_id"] == answers[2][1]["delivery_id"] != answers[1][1]["delivery_id"]
    assert world.store.count() == 2


@pytest.mark.parametrize(("request_bytes", "status", "error"), [
    (b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     411, "Content-Length required"),
    (b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\n\r\n", 411, "Content-Length required"),
    (b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413, "body must be"),
    (b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 413, "body must be"),
    (b"POST /v1/other HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx", 404, "POST /v1/deliveries only"),
    (b"PUT /v1/deliveries HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx", 405, "POST /v1/deliveries only"),
    (b"GET /v1/meters/37155794/readings HTTP/1.1\r\nHost: h\r\n\r\n", 404, "nothing is read inside the tunnels"),
    (b"POST /v1/deliveries HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", 400, "malformed HTTP"),  # no Host
    (b"POST /v1/deli\x00veries HTTP/1.1\r\nHost: h\r\n\r\n", 400, "malformed HTTP"),
    # headers still not ended after 16 KiB
    (b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 20000, 431, "malformed HTTP"),
])
def test_bad_http_is_refused_with_the_reason_and_the_connection_closed(
        world: World, request_bytes: bytes, status: int, error: str, caplog: pytest.LogCaptureFixture) -> None:
    world.start()
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(request_bytes)
        [(got, doc, close)] = _answers(sock, 1)
        assert (got, close) == (status, True) and error in str(doc["error"]), doc
        assert _closed(sock)
    assert "refused a request from 127.0.0.1" in caplog.text
    with socket.create_connection(("127.0.0.1", world.port)) as sock:  # and the loop serves on
        sock.sendall(_post(world.seal()))  # type: ignore[operator]
        assert _answers(sock, 1)[0][0] == 200


def test_refused_deliveries_keep_the_connection_and_the_admitted_ones_are_stored(world: World) -> None:
    world.start()
    good = world.seal(3)  # type: ignore[operator]
    tampered = bytearray(good)
    tampered[-20] ^= 1
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(_post(bytes(tampered)) + _post(b"not CMS at all") + _post(good))
        answers = _answers(sock, 3)
    assert [a[0] for a in answers] == [400, 400, 200]
    assert "cannot decrypt" in str(answers[0][1]["error"]) and not answers[0][2]
    assert world.store.count() == 1


def test_a_bug_answers_500_and_a_failed_commit_503_and_the_loop_goes_on(
        world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real_admit = ingest_server.admit
    poison = world.seal(4)  # type: ignore[operator]

    def buggy(ctx: IngestContext, body: bytes, source_ip: str) -> object:
        if body == poison:
            raise KeyError("a bug")
        return real_admit(ctx, body, source_ip)

    monkeypatch.setattr(ingest_server, "admit", buggy)
    real_store = world.store.store_many
    failing = [True]

    def store_many(batch: object, wait: bool = True) -> list[bool]:
        if failing[0]:
            failing[0] = False
            raise RuntimeError("disk on fire")
        return real_store(batch, wait=wait)  # type: ignore[arg-type]

    monkeypatch.setattr(world.store, "store_many", store_many)
    world.start()
    later = world.seal(5)  # type: ignore[operator]
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(_post(poison))
        assert _answers(sock, 1)[0][:1] == (500,)
        sock.sendall(_post(later))
        [(status, doc, _)] = _answers(sock, 1)
        assert status == 503 and "cannot store now" in str(doc["error"])
        sock.sendall(_post(later))  # the sender tries again
        [(status, doc, _)] = _answers(sock, 1)
        assert (status, doc["stored"]) == (200, True)
    assert world.store.delivery_ids() == [doc["delivery_id"]]
    assert "ingest failed on a delivery" in caplog.text and "KeyError" in caplog.text
    assert "storing 1 deliveries failed" in caplog.text


def test_a_client_that_does_not_read_its_answers_holds_up_nobody(world: World) -> None:
    """Thousands of pipelined refusals, never read: the answers fill the socket, the loop
    stops reading that client and serves another at once; read at last, every answer is there."""
    world.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # accepted sockets inherit it
    world.start()
    count = 3000  # ~450 kB of answers: far more than both socket buffers hold
    with socket.create_connection(("127.0.0.1", world.port)) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        payload = _post(b"x" * 200) * count
        sender = threading.Thread(target=hog.sendall, args=(payload,), daemon=True)
        sender.start()
        time.sleep(1.0)
        assert [c.writing for c in world.server._clients.values()] == [True]  # its answers wait, unread
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", world.port)) as other:
            other.sendall(_post(world.seal(6)))  # type: ignore[operator]
            assert _answers(other, 1)[0][0] == 200
        assert time.monotonic() - started < 2.0
        answers = _answers(hog, count, timeout=30)
        sender.join(timeout=30)
    assert {status for status, _, _ in answers} == {400}


def test_idle_connections_are_closed_and_the_cap_holds_new_ones_back(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_server, "IDLE_S", 0.3)
    world.server.max_clients = 2
    world.start()
    idle = socket.create_connection(("127.0.0.1", world.port))
    busy = socket.create_connection(("127.0.0.1", world.port))
    busy.sendall(_post(world.seal(7)))  # type: ignore[operator]
    assert _answers(busy, 1)[0][0] == 200
    third = socket.create_connection(("127.0.0.1", world.port))  # in the kernel's backlog: not taken yet
    third.sendall(_post(world.seal(8)))  # type: ignore[operator]
    # the idle two are closed after IDLE_S (swept once a second), then the third is taken
    assert _closed(idle, timeout=5) and _closed(busy, timeout=5)
    assert _answers(third, 1)[0][0] == 200
    for sock in (idle, busy, third):
        sock.close()


def _hold_write_lock(world: World) -> sqlite3.Connection:
    """Another ingest process's turn on SQLite's write lock, held until rolled back."""
    holder = sqlite3.connect(world.store._con.execute("PRAGMA database_list").fetchone()[2],
                             isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_while_another_process_holds_the_write_lock_the_batch_waits_and_the_loop_serves(world: World) -> None:
    holder = _hold_write_lock(world)
    world.start()
    waiting = [socket.create_connection(("127.0.0.1", world.port)) for _ in range(2)]
    for n, sock in enumerate(waiting):
        sock.sendall(_post(world.seal(20 + n)))  # type: ignore[operator]
    time.sleep(0.3)
    for sock in waiting:  # admitted, not acknowledged: nothing is committed yet
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    with socket.create_connection(("127.0.0.1", world.port)) as other:  # the loop is not stuck
        other.sendall(_post(b"not a delivery"))
        assert _answers(other, 1)[0][0] == 400
    before = world.transactions[0]
    holder.rollback()
    answers = [_answers(sock, 1)[0] for sock in waiting]
    assert [(status, doc["stored"]) for status, doc, _ in answers] == [(200, True), (200, True)]
    assert world.store.count() == 2
    assert world.transactions[0] - before == 1  # both in the one commit once the lock was free
    holder.close()
    for sock in waiting:
        sock.close()


def test_a_lock_held_past_the_wait_answers_503_and_stores_nothing(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_server, "LOCK_WAIT_S", 0.3)
    holder = _hold_write_lock(world)
    world.start()
    body = world.seal(30)  # type: ignore[operator]
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(_post(body))
        [(status, doc, close)] = _answers(sock, 1)
        assert (status, close) == (503, False) and "stayed locked" in str(doc["error"])
        holder.rollback()
        sock.sendall(_post(body))  # the sender tries again on the same connection
        assert _answers(sock, 1)[0][:1] == (200,)
    assert world.store.count() == 1
    holder.close()
