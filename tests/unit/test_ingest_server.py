"""The ingest's event loop (headend/ingest_server.py) over real loopback sockets: deliveries
that arrive together are stored in one transaction and each answered only after it; a
pipelined connection is answered in order; bad HTTP is refused and the connection closed; a
bug or a failed commit costs an answer, not the loop; a client that does not read its
answers does not hold up the others; idle connections and the connection cap."""

from __future__ import annotations

import datetime as dt
import errno
import json
import selectors
import socket
import sqlite3
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from headend import ingest_server
from headend.balance import Balance
from headend.document import Delivery, Value, build
from headend.ingest import MAX_BODY, IngestContext
from headend.ingest_server import IngestServer
from headend.store import HeadendStore
from pki.ca import CertificateAuthority, init_ca
from pki.cms import sign, software_signer
from pki.cms_envelope import encrypt, software_agreement
from tests.headendhelpers import count_transactions
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
    transactions = count_transactions(store)
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
        (200, True, False), (200, True, False), (409, False, False)]
    assert answers[0][1]["delivery_id"] == answers[2][1]["delivery_id"] != answers[1][1]["delivery_id"]
    assert world.store.count() == 2


def test_an_answer_closes_the_connection_when_the_request_asks_or_is_http_1_0(world: World) -> None:
    world.start()
    first, second, third = world.seal(11), world.seal(12), world.seal(13)  # type: ignore[operator]
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        # "close" among other tokens: answered, said, closed; what was pipelined behind it is not read
        sock.sendall(_post(first, b"Connection: keep-alive, Close\r\n") + _post(second))
        [(status, doc, close)] = _answers(sock, 1)
        assert (status, doc["stored"], close) == (200, True, True)
        assert _closed(sock)
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(_post(third).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        [(status, _, close)] = _answers(sock, 1)
        assert (status, close) == (200, True) and _closed(sock)
    with socket.create_connection(("127.0.0.1", world.port)) as sock:  # a plain HTTP/1.1 one stays open
        sock.sendall(_post(second))
        [(status, doc, close)] = _answers(sock, 1)
        assert (status, doc["stored"], close) == (200, True, False)
        sock.sendall(_post(second))
        assert [(status, doc["stored"]) for status, doc, _ in _answers(sock, 1)] == [(409, False)]
    assert world.store.count() == 3


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


def test_a_client_that_does_not_read_its_answers_holds_up_nobody_and_no_memory(world: World) -> None:
    """Twenty thousand pipelined requests (6 MB), answers never read: the socket fills, the
    loop stops reading that client and holds no more than one answer and one read of its
    requests; another client is served at once; read at last, the answers come in order."""
    world.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # accepted sockets inherit it
    world.start()
    count = 20000
    with socket.create_connection(("127.0.0.1", world.port)) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sender = threading.Thread(target=_send_quietly, args=(hog, _post(b"x" * 200) * count), daemon=True)
        sender.start()
        time.sleep(1.5)
        [client] = world.server._clients.values()
        assert client.watched == selectors.EVENT_WRITE  # waiting for the peer to take its answers
        assert len(client.out) < 1024  # one answer at most, not the backlog
        assert len(client.inbuf) <= ingest_server.RECV_BYTES + ingest_server.HEADER_LIMIT
        assert sender.is_alive()  # the rest of its requests wait in its own socket
        with socket.create_connection(("127.0.0.1", world.port)) as other:
            other.sendall(_post(world.seal(6)))  # type: ignore[operator]
            assert _answers(other, 1)[0][0] == 200
        answers = _answers(hog, 2000, timeout=30)
    assert {status for status, _, _ in answers} == {400}


def test_a_pipelining_client_that_reads_its_answers_is_read_no_faster_than_answered(world: World) -> None:
    """The loop reads a connection only while the request in hand is not all there, so
    a client streaming requests faster than they are answered fills its own socket, not
    the worker's memory."""
    world.start()
    count = 20000
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sender = threading.Thread(target=_send_quietly, args=(sock, _post(b"x" * 200) * count), daemon=True)
        sender.start()
        got: list[int] = []
        reader = threading.Thread(target=lambda: got.extend(a[0] for a in _answers(sock, 3000, timeout=30)))
        reader.start()
        largest = 0
        while reader.is_alive():
            for client in list(world.server._clients.values()):
                largest = max(largest, len(client.inbuf))
            time.sleep(0.01)
        reader.join()
    assert got == [400] * 3000
    assert 0 < largest <= ingest_server.RECV_BYTES + ingest_server.HEADER_LIMIT


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with suppress(OSError):  # the test closed it before it was all sent
        sock.sendall(data)


def test_a_half_closed_connection_gets_every_answer_then_is_closed(world: World) -> None:
    world.start()
    bodies = [world.seal(40), world.seal(41)]  # type: ignore[operator]
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(_post(bodies[0]) + _post(bodies[1]))
        sock.shutdown(socket.SHUT_WR)
        answers = _answers(sock, 2)
        assert [(status, doc["stored"]) for status, doc, _ in answers] == [(200, True), (200, True)]
        assert _closed(sock)
    assert world.store.count() == 2
    with socket.create_connection(("127.0.0.1", world.port)) as sock:  # the worker lives on
        sock.sendall(_post(world.seal(42)))  # type: ignore[operator]
        assert _answers(sock, 1)[0][0] == 200


def test_the_connection_cap_holds_new_ones_in_the_backlog_until_one_leaves(world: World) -> None:
    world.server.max_clients = 2
    world.start()
    first = socket.create_connection(("127.0.0.1", world.port))
    second = socket.create_connection(("127.0.0.1", world.port))
    second.sendall(_post(world.seal(7)))  # type: ignore[operator]
    assert _answers(second, 1)[0][0] == 200
    third = socket.create_connection(("127.0.0.1", world.port))  # in the kernel's backlog: not taken yet
    third.sendall(_post(world.seal(8)))  # type: ignore[operator]
    third.settimeout(0.5)
    with pytest.raises(TimeoutError):
        third.recv(1)
    first.close()
    assert _answers(third, 1)[0][0] == 200
    for sock in (second, third):
        sock.close()


def test_one_address_may_hold_only_so_many_connections(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.server.per_address = 2
    world.start()
    held = [socket.create_connection(("127.0.0.1", world.port)) for _ in range(2)]
    for sock in held:
        sock.sendall(_post(world.seal(9)))  # type: ignore[operator]
        assert _answers(sock, 1)[0][0] == 200  # both taken
    extra = socket.create_connection(("127.0.0.1", world.port))
    extra.sendall(_post(world.seal(10)))  # type: ignore[operator]
    assert _closed(extra)
    assert "127.0.0.1 has 2 connections open, the most one address may" in caplog.text
    held[0].close()
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", world.port)) as again:
        again.sendall(_post(world.seal(11)))  # type: ignore[operator]
        assert _answers(again, 1)[0][0] == 200
    for sock in (held[1], extra):
        sock.close()


def test_idle_and_trickled_connections_are_closed(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_server, "IDLE_S", 0.3)
    monkeypatch.setattr(ingest_server, "REQUEST_S", 1.0)
    world.start()
    idle = socket.create_connection(("127.0.0.1", world.port))
    trickle = socket.create_connection(("127.0.0.1", world.port))
    request = _post(world.seal(12))  # type: ignore[operator]
    for byte in request[:40]:  # a byte every 0.1 s: never idle, never complete
        try:
            trickle.sendall(bytes([byte]))
        except OSError:  # answered and closed
            break
        time.sleep(0.1)
    [(status, doc, close)] = _answers(trickle, 1)
    assert (status, close) == (408, True) and "not complete within" in str(doc["error"])
    assert _closed(idle, timeout=0.1)
    for sock in (idle, trickle):
        sock.close()


def test_bodies_buffered_past_the_budget_are_refused(world: World) -> None:
    world.server.body_budget = 4096
    world.start()
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\nContent-Length: 10000\r\n\r\n" + b"x" * 6000)
        [(status, doc, close)] = _answers(sock, 1)
        assert (status, close) == (503, True) and "too many deliveries" in str(doc["error"])
    assert world.server._buffered == 0
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(_post(world.seal(13)))  # type: ignore[operator]
        assert _answers(sock, 1)[0][0] == 200


class _NoDescriptors:
    """The listener, as a process out of file descriptors sees it: readable, accept fails."""

    def __init__(self, real: socket.socket) -> None:
        self.real, self.accepts = real, 0

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        self.accepts += 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_out_of_descriptors_accepting_rests_instead_of_spinning(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    real = world.server.socket
    blocked = _NoDescriptors(real)
    world.server.socket = blocked  # type: ignore[assignment]
    world.start()
    waiting = socket.create_connection(("127.0.0.1", world.port))  # the listener is readable from now on
    time.sleep(1.2)
    assert 1 <= blocked.accepts <= 4  # once per rest of 0.5 s, not once per turn
    assert caplog.text.count("cannot accept connections") == blocked.accepts
    world.server.socket = real  # descriptors free again: the waiting connection is taken
    waiting.sendall(_post(world.seal(14)))  # type: ignore[operator]
    assert _answers(waiting, 1)[0][0] == 200
    waiting.close()


def test_a_failed_commit_answers_every_delivery_of_the_batch_503_and_keeps_none(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = [world.seal(50 + n) for n in range(3)]  # type: ignore[operator]
    insert = world.store._insert
    calls = [0]

    def failing_insert(cur: object, delivery: Delivery, received_at: str) -> bool:
        calls[0] += 1
        if calls[0] == 3:  # the third row of the one transaction: the first two are written
            raise sqlite3.OperationalError("disk I/O error")
        return insert(cur, delivery, received_at)

    monkeypatch.setattr(world.store, "_insert", failing_insert)
    socks = [socket.create_connection(("127.0.0.1", world.port)) for _ in bodies]
    for sock, body in zip(socks, bodies, strict=True):
        sock.sendall(_post(body))
    time.sleep(0.2)
    world.start()  # all three in one turn, one transaction
    answers = [_answers(sock, 1)[0] for sock in socks]
    assert [(status, "disk I/O error" in str(doc["error"])) for status, doc, _ in answers] == [(503, True)] * 3
    assert world.store.count() == 0  # rolled back, the two rows written before the fault too
    for sock, body in zip(socks, bodies, strict=True):  # each sender tries again
        sock.sendall(_post(body))
        assert _answers(sock, 1)[0][:1] == (200,)
        sock.close()
    assert world.store.count() == 3


def test_a_reason_that_quotes_the_sender_is_logged_with_its_control_characters_escaped(
        world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    forged = "signer CN=x\r\n2026-11-26 11:00 INFO smgw.headend: delivery 0f0f stored"
    monkeypatch.setattr(ingest_server, "admit", lambda ctx, body, ip: (403, {"error": forged}))
    world.start()
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(_post(b"anything"))
        [(status, doc, _)] = _answers(sock, 1)
    assert (status, doc["error"]) == (403, forged)  # the sender hears it as it was (JSON escapes it)
    [line] = [r.getMessage() for r in caplog.records if "refused delivery" in r.getMessage()]
    assert "\r" not in line and "\n" not in line and "\\r\\n" in line


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
    deadline = time.monotonic() + 10  # (both admitted: on a loaded machine that can take more than a moment)
    while len(world.server._pending) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
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


def test_bodies_are_let_go_when_delivered_refused_or_cut_off(world: World) -> None:
    """The body budget's accounting: back to nothing after served deliveries and after a
    peer that resets in the middle of a body (else every later delivery would hear 503)."""
    world.start()
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(_post(world.seal(60)) + _post(b"x" * 300))  # type: ignore[operator]
        assert [a[0] for a in _answers(sock, 2)] == [200, 400]
    assert (world.server._buffered, world.server._buffered_by) == (0, {})
    cut = socket.create_connection(("127.0.0.1", world.port))
    cut.sendall(b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n" + b"x" * 3000)
    time.sleep(0.3)
    assert world.server._buffered == 3000
    cut.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, not a FIN
    cut.close()
    time.sleep(0.3)
    assert (world.server._buffered, world.server._buffered_by, world.server._per_address) == (0, {}, {})
    assert world.server._clients == {}


def test_one_address_may_not_take_the_body_budget_from_the_others(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_server, "ADDRESS_BODY_LIMIT", 6000)  # (the real one: two whole bodies)
    world.start()
    head = b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n"
    first = socket.create_connection(("127.0.0.1", world.port))
    first.sendall(head + b"x" * 3000)
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", world.port)) as second:
        second.sendall(head + b"x" * 3500)  # 6,500 bytes from one address
        [(status, doc, close)] = _answers(second, 1)
        assert (status, close) == (503, True) and "from this address" in str(doc["error"])
    first.sendall(b"x" * 2000)  # the first one's body is still taken, and judged
    assert _answers(first, 1)[0][0] == 400
    first.close()


def test_a_turn_takes_so_many_requests_and_the_rest_the_next(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_server, "MAX_PER_TURN", 2)
    socks = [socket.create_connection(("127.0.0.1", world.port)) for _ in range(5)]
    for n, sock in enumerate(socks):
        sock.sendall(_post(world.seal(70 + n)))  # type: ignore[operator]
    time.sleep(0.2)
    before = world.transactions[0]
    world.start()
    assert [_answers(sock, 1)[0][0] for sock in socks] == [200] * 5
    assert world.transactions[0] - before == 3  # 2 + 2 + 1
    for sock in socks:
        sock.close()


def test_parked_senders_are_neither_read_nor_swept_and_a_stop_answers_them(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_server, "IDLE_S", 0.3)
    holder = _hold_write_lock(world)
    world.start()
    first, second = (socket.create_connection(("127.0.0.1", world.port)) for _ in range(2))
    first.sendall(_post(world.seal(80)) + _post(world.seal(81)))  # type: ignore[operator]  # one pipelined behind
    second.sendall(_post(world.seal(82)))  # type: ignore[operator]
    time.sleep(1.5)  # past IDLE_S, with a sweep or two
    parked = list(world.server._clients.values())
    assert len(parked) == 2 and all(c.parked and c.watched == 0 for c in parked)
    holder.rollback()
    assert [a[0] for a in _answers(first, 2)] == [200, 200]
    assert _answers(second, 1)[0][0] == 200
    holder.execute("BEGIN IMMEDIATE")  # held again: the next one waits, then the ingest stops
    second.sendall(_post(world.seal(83)))  # type: ignore[operator]
    time.sleep(0.3)
    world.server.shutdown()
    [(status, doc, _)] = _answers(second, 1)
    assert status == 503 and "stopping" in str(doc["error"])
    holder.rollback()
    assert world.store.count() == 3
    for sock in (first, second):
        sock.close()
    holder.close()


def test_a_kept_alive_connection_gets_a_fresh_request_deadline(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_server, "REQUEST_S", 0.5)
    world.start()
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(_post(world.seal(90)))  # type: ignore[operator]
        assert _answers(sock, 1)[0][0] == 200
        time.sleep(1.5)  # longer than REQUEST_S, shorter than IDLE_S: a gateway between deliveries
        sock.sendall(_post(world.seal(91)))  # type: ignore[operator]
        assert _answers(sock, 1)[0][0] == 200


def test_a_request_split_anywhere_across_reads_is_framed_whole(world: World) -> None:
    """The ingest frames requests itself (a head to its blank line, a body to its length):
    cut in three at points inside the head's blank line and the body, and with the next
    request arriving with the end of the first, each is taken whole."""
    world.start()
    first, second = _post(world.seal(100)), _post(world.seal(101))  # type: ignore[operator]
    blank = first.index(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (first[:blank + 2], first[blank + 2:blank + 300], first[blank + 300:] + second[:10]):
            sock.sendall(piece)
            time.sleep(0.1)  # each arrives as a read of its own
        sock.sendall(second[10:])
        assert [(status, doc["stored"]) for status, doc, _ in _answers(sock, 2)] == [(200, True), (200, True)]
    assert world.store.count() == 2


def test_a_connection_that_ends_inside_a_request_is_answered_400_and_closed(world: World) -> None:
    world.start()
    request = _post(world.seal(102))  # type: ignore[operator]
    for cut in (request[:20], request[:len(request) - 5]):  # in the head, in the body
        with socket.create_connection(("127.0.0.1", world.port)) as sock:
            sock.sendall(cut)
            sock.shutdown(socket.SHUT_WR)
            [(status, doc, close)] = _answers(sock, 1)
            assert (status, close) == (400, True) and "connection ended inside" in str(doc["error"])
            assert _closed(sock)
    assert world.store.count() == 0 and world.server._buffered == 0


def test_a_head_over_the_limit_is_refused_even_when_its_end_has_arrived(world: World) -> None:
    world.start()
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\nX: " + b"a" * ingest_server.HEADER_LIMIT
                     + b"\r\nContent-Length: 1\r\n\r\nx")
        [(status, doc, close)] = _answers(sock, 1)
        assert (status, close) == (431, True) and "over" in str(doc["error"])


def test_a_head_trickled_a_byte_at_a_time_costs_the_loop_its_length_not_its_square(world: World) -> None:
    """Each read searches on from where the last search ended: 8 kB of a head sent in 128
    pieces is searched about 8 kB far in all, not 8 kB times 64 (a bare LF is
    refused at once, so the worst case is a head of ordinary lines that never ends)."""
    searched: list[int] = []
    real = ingest_server.head_end

    def counting(buffer: bytearray, start: int, limit: int) -> int:
        searched.append(min(len(buffer), limit) - start)
        return real(buffer, start, limit)

    world.start()
    head = b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\n" + b"X-Long: 1\r\n" * 740  # ~8 kB, no blank line
    with pytest.MonkeyPatch.context() as patch, socket.create_connection(("127.0.0.1", world.port)) as sock:
        patch.setattr(ingest_server, "head_end", counting)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for n in range(0, len(head), 64):
            sock.sendall(head[n:n + 64])
            time.sleep(0.004)  # each piece a read of its own
        sock.sendall(b"Content-Length: 1\r\n\r\nx")
        [(status, _, _)] = _answers(sock, 1)
    assert status == 400  # (b"x" is no delivery) the head was read whole
    assert len(searched) > 20 and sum(searched) < 4 * len(head)


def test_a_bare_lf_is_refused_at_once_not_at_the_deadline(world: World) -> None:
    world.start()
    with socket.create_connection(("127.0.0.1", world.port)) as sock:
        sock.sendall(b"POST /v1/deliveries HTTP/1.1\nHost: h")  # no blank line: h11 would have waited
        [(status, doc, close)] = _answers(sock, 1, timeout=2)
        assert (status, close) == (400, True) and "bare LF" in str(doc["error"])


def test_two_workers_hold_an_even_share_of_the_connections_whichever_the_kernel_picks(world: World) -> None:
    """Two servers on one port (SO_REUSEPORT, as the workers are), seated in one Balance:
    however the kernel's hash splits 24 connections, each ends up holding 12, and a
    delivery goes through every one of them, handed over or not."""
    balance = Balance(2)
    first = IngestServer(world.server.ctx, "127.0.0.1", 0, per_address=64, seat=balance.seat(0))
    second = IngestServer(world.server.ctx, "127.0.0.1", first.server_address[1], per_address=64,
                          seat=balance.seat(1))
    servers = (first, second)
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    socks = [socket.create_connection(("127.0.0.1", first.server_address[1])) for _ in range(24)]
    try:
        deadline = time.monotonic() + 5
        while sum(len(s._clients) for s in servers) < 24 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [len(s._clients) for s in servers] == [12, 12]
        assert first._seat.loads() == [12, 12]  # type: ignore[union-attr]
        for n, sock in enumerate(socks):
            sock.sendall(_post(world.seal(200 + n)))  # type: ignore[operator]
        assert [_answers(sock, 1)[0][0] for sock in socks] == [200] * 24
    finally:
        for sock in socks:
            sock.close()
        deadline = time.monotonic() + 5
        while any(s._clients for s in servers) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first._seat.loads() == [0, 0]  # type: ignore[union-attr]  # every close counted
        for server in servers:
            server.shutdown()
            server.server_close()
        balance.close()
    assert world.store.count() == 24


def test_a_worker_that_does_not_read_its_inbox_gets_nothing_more_and_the_sender_keeps_it() -> None:
    """What is on its way to a worker counts as its own at once, and stays so across its
    restart until the new worker takes it; a full inbox refuses, and the sender keeps it."""
    balance = Balance(2)
    try:
        giver = balance.seat(0)
        giver.count(300)  # holds 300, the other none: every new connection would go over
        taken = []
        for _ in range(400):  # the other never reads its inbox: it fills, and the rest are kept
            left, right = socket.socketpair()
            taken.append(giver.hand_over(left))
            left.close()
            right.close()
            giver.count(0 if taken[-1] else 1)
        sent = taken.count(True)
        assert taken[0] is True and taken[-1] is False and 0 < sent < 400
        assert giver.loads() == [300 + 400 - sent, sent]
        restarted = balance.seat(1)  # the receiver dies and another takes its place: nothing forgotten
        assert giver.loads() == [300 + 400 - sent, sent]
        received = restarted.receive(10)  # at most what it asks for
        assert len(received) == 10 and giver.loads()[1] == sent - 10
        received += restarted.receive(1000)
        assert len(received) == sent and giver.loads()[1] == 0  # (taken, then counted as held by its server)
        for sock in received:
            sock.close()
    finally:
        balance.close()
