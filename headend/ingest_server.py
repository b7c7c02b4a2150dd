"""The ingest's HTTP server on the tunnel address: one event loop per worker process.

A request's head is read by llhttp (``headend.http_head``: the request line and headers,
strict); this module moves bytes between sockets and buffers, frames each request (its head
ends at the blank line, its body is Content-Length bytes) and hands complete requests to
``headend.ingest``. Each turn of the loop reads whatever the connections have sent, then
works through every delivery that arrived in that turn: each one verified and decrypted
(``admit``), all admitted ones stored in one transaction (``store_all``: one commit, one
fsync, one turn on SQLite's write lock), and only then each sender answered. That is the
group commit, without threads. While another ingest process holds SQLite's write lock, the
admitted deliveries wait (their senders are not read from) and the loop goes on verifying
what else arrives; the next try takes them all. (A thread that commits while the loop
verifies the next turn's deliveries measured slower: the two contend for the GIL,
bench/headend.py median 1,097/s against 1,345/s.)

Why not ``http.server`` with a thread per connection, as before: a delivery cost the
workers 1,545 us of CPU there, of which the thread hand-offs (GIL, events, locks) and
``email.parser``'s header parsing were a third; the same deliveries through this loop cost
about 1,000 us (bench/headend.py). The deliveries are CPU-bound, so threads bought no overlap.

Every gateway of the fleet reaches this port, so one connection must not hold up the others
or the worker's memory. A connection is read from only while the request in hand is not all
there (so its buffer holds at most one read beyond it); not while its request waits for
an answer, nor while its answers wait to be sent (they wait in the peer's socket buffer, not
in ours). A request must be complete within ``REQUEST_S`` of its first byte; a connection
that neither sends nor takes a byte for ``IDLE_S`` is closed; one address holds at most
``per_address`` connections and ``ADDRESS_BODY_LIMIT`` bytes of unfinished bodies, and all
of them together at most ``body_budget`` bytes. A turn takes at most ``MAX_PER_TURN``
requests, so answers never wait behind thousands of others; the timeouts are judged by the
clock of the turn's ``select``, so bytes that arrived while the loop was busy count as
arrived in time. A refusal before the body is read closes the connection, as does
malformed HTTP.
"""

from __future__ import annotations

import datetime as dt
import errno
import http
import logging
import resource
import selectors
import socket
import threading
import time
from functools import lru_cache

from headend.balance import Seat
from headend.document import Delivery
from headend.http_head import HeadRefused, RequestHead, head_end, parse_head
from headend.ingest import MAX_BODY, IngestContext, Verdict, admit, printable, store_all
from headend.store import LOCK_WAIT_S, WriteLockBusy, dumps

log = logging.getLogger("smgw.headend")

#: Linux's IP_FREEBIND (15; Python names it only from 3.12)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IDLE_S = 30.0  #: a connection that neither sends nor takes a byte this long is closed
REQUEST_S = 30.0  #: from a request's first byte to its last (a trickled request is cut off)
HEADER_LIMIT = 16 * 1024  #: request line and headers; a delivery's are under 200 bytes
RECV_BYTES = 1 << 16
SPARE_FDS = 64  #: file descriptors kept for the database, logs and the read API
RETRY_S = 0.0005  #: how soon a batch asks for SQLite's write lock again
ACCEPT_PAUSE_S = 0.5  #: out of descriptors or memory: how long accepting rests
PER_ADDRESS = 8  #: connections from one address at once (a gateway keeps one; nftables allows 8)
BODY_BUDGET = 64 << 20  #: request bodies buffered at once by one worker, all connections together
ADDRESS_BODY_LIMIT = 2 * MAX_BODY  #: of which one address may hold (a gateway sends one ~2 kB delivery at a time)
MAX_PER_TURN = 256  #: requests one turn takes; the rest wait in the kernel (a turn stays well under a second)
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_INBOX = object()  #: the selector's mark of the inbox of connections handed over by other workers
_FULL = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _tally(counts: dict[str, int], key: str, change: int) -> int:
    """``counts[key]`` changed by ``change``, the key gone at zero (so a map of what each
    address holds never fills with addresses that hold nothing); the new count."""
    count = counts.pop(key, 0) + change
    if count:
        counts[key] = count
    return count


class _Client:
    """One connection: what it sent that is not taken yet, the request in hand and the
    answer not yet sent."""

    __slots__ = (
        "address",
        "closing",
        "eof",
        "head",
        "held",
        "inbuf",
        "keep_alive",
        "need",
        "out",
        "parked",
        "scanned",
        "seen",
        "sock",
        "started",
        "wants_data",
        "watched",
    )

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock, self.address = sock, address
        self.inbuf = bytearray()  #: received, not yet taken: the request in hand and at most one read more
        self.need: int | None = None  #: the body's length once its head is read; None: reading a head
        self.scanned = 0  #: how far the head in hand has been searched for its end
        self.held = 0  #: of the body in hand, the bytes counted against the budgets
        self.keep_alive = True  #: the request in hand allows another one after it
        self.out = bytearray()
        self.seen = time.monotonic()  #: the last byte received or sent
        self.started: float | None = None  #: when the request in hand began to arrive
        self.closing = False  #: close once ``out`` is sent
        self.eof = False  #: the peer has closed its side: nothing more to read
        self.head = False  #: the request is a HEAD: its answer has headers only
        self.parked = False  #: its delivery waits for the store
        self.wants_data = True  #: the request in hand is not all there
        self.watched = 0  #: the events it is registered for (0: not registered)


def _request_problem(request: RequestHead) -> tuple[int, str] | None:
    """Why a request line and its headers are refused before the body is read, or None."""
    if request.method == b"GET":
        return 404, "nothing is read inside the tunnels: the read API listens on the headend host"
    if request.method != b"POST":
        return 405, "POST /v1/deliveries only"
    if request.target != b"/v1/deliveries":
        return 404, "POST /v1/deliveries only"
    length = request.length  # llhttp admits only digits, and one value
    if length is None or request.chunked:  # the size must be known, and bounded, before the body is read
        return 411, "Content-Length required (and no Transfer-Encoding)"
    if not 0 < length <= MAX_BODY:
        return 413, f"body must be 1..{MAX_BODY} bytes"
    return None


def _request_line(head: bytes | bytearray) -> bytes:
    """A refused head's first line, cut short, for the log (which escapes it)."""
    return bytes(head[:80]).split(b"\n", 1)[0].removesuffix(b"\r")


_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}


@lru_cache(maxsize=256)
def _head(status: int, length: int, close: bool) -> bytes:
    """An answer's status line and headers. Written here, not by an HTTP library: all of it
    is ours (a status code, its standard phrase, a length, constant headers), and sending
    it through h11's state machine cost as much as parsing the request did (about 50 us of
    ~600 per delivery)."""
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, '')}".rstrip(), "Content-Type: application/json",
             f"Content-Length: {length}"]
    if status == 405:
        lines.append("Allow: POST")
    if close:  # say so: the client must not send its next request on this connection
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class IngestServer:
    """``serve_forever`` / ``shutdown`` / ``server_close``, as a ``socketserver`` server has,
    so the workers run it as they run the read API's."""

    def __init__(self, ctx: IngestContext, address: str, port: int, *, per_address: int = PER_ADDRESS,
                 body_budget: int = BODY_BUDGET, seat: Seat | None = None) -> None:
        self.ctx = ctx
        self.per_address, self.body_budget = per_address, body_budget
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # several ingest processes on one port; the kernel spreads the connections
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # bind to the tunnel's address even before OpenVPN has made it (systemd's FreeBind=):
            # the ingest and its tunnel server start side by side, and the address only exists
            # once the server has opened its tun device
            self.socket.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            self.socket.bind((address, port))
            self.socket.listen(socket.SOMAXCONN)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address: tuple[str, int] = self.socket.getsockname()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, _READ, None)
        self._seat = seat  #: this worker's place among the workers, to even out their connections
        if seat is not None:
            self._selector.register(seat.inbox, _READ, _INBOX)
        self._accepting = True
        self._accept_rest_until = 0.0
        self._clients: dict[int, _Client] = {}
        self._per_address: dict[str, int] = {}
        self._buffered = 0  #: bytes of request bodies held, all clients together
        self._buffered_by: dict[str, int] = {}  #: the same per address
        self._again: list[_Client] = []  #: answered clients whose next request may already be buffered
        self._pending: list[tuple[_Client, Delivery]] = []  #: admitted, waiting for the write lock
        self._pending_since = 0.0
        self.max_clients = max(8, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - SPARE_FDS)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()

    # -- the loop ---------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._done.clear()
        try:
            next_sweep = time.monotonic() + 1.0
            while not self._stop.is_set():
                requests: list[tuple[_Client, bytes]] = []
                again, self._again = self._again, []
                for i, client in enumerate(again):
                    if len(requests) >= MAX_PER_TURN:
                        self._again.extend(again[i:])
                        break
                    if client.sock.fileno() >= 0 and not client.out:
                        self._take(client, requests)
                wait = 0 if requests or self._again else RETRY_S if self._pending else poll_interval
                events = self._selector.select(wait)
                now = time.monotonic()  # the timeouts' clock: what arrived by now is in events
                unread: set[_Client] = set()
                for key, mask in events:
                    if key.data is None:
                        self._accept()
                    elif key.data is _INBOX:
                        self._handed_over()
                    elif mask & _WRITE:
                        self._flush(key.data)
                    elif len(requests) < MAX_PER_TURN:
                        self._receive(key.data, requests)
                    else:  # this turn is full: read next turn (the socket stays readable)
                        unread.add(key.data)
                if now >= next_sweep:
                    self._sweep(now, unread)
                    next_sweep = now + 1.0
                self._answer_all(requests)
                self._commit()
            self._give_back("the ingest is stopping; try again")
        finally:
            self._done.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (running in another thread) and wait until it has."""
        self._stop.set()
        self._done.wait()

    def server_close(self) -> None:
        for client in list(self._clients.values()):
            self._close(client)
        self._selector.close()
        self.socket.close()

    # -- connections ------------------------------------------------------------------------

    def _accept(self) -> None:
        while len(self._clients) < self.max_clients:
            try:
                sock, peer = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _FULL:  # the listener stays readable: rest, or this would spin
                    log.warning("ingest: cannot accept connections (%s); resting %.1f s", exc, ACCEPT_PAUSE_S)
                    self._pause_accepting(time.monotonic() + ACCEPT_PAUSE_S)
                return  # else the peer gave up already
            if self._seat is not None and self._seat.hand_over(sock):
                sock.close()  # (the other worker has its own descriptor of it now)
                continue
            self._take_connection(sock, str(peer[0]))
        self._full()

    def _take_connection(self, sock: socket.socket, address: str) -> None:
        """A connection this worker accepted or was handed, unless its address holds too many already."""
        if self._per_address.get(address, 0) >= self.per_address:
            log.warning("ingest: %s has %d connections open, the most one address may; closed a new one",
                        address, self.per_address)
            sock.close()
            return
        sock.setblocking(False)
        # an answer must leave now, not when Nagle's algorithm has the previous one's ACK
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = _Client(sock, address)
        self._clients[sock.fileno()] = client
        _tally(self._per_address, address, 1)
        if self._seat is not None:
            self._seat.count(1)
        self._watch(client)

    def _handed_over(self) -> None:
        """Connections another worker accepted and handed to this one (see ``headend.balance``)."""
        assert self._seat is not None  # (the inbox is watched only with a seat)
        for sock in self._seat.receive(self.max_clients - len(self._clients)):
            try:
                address = str(sock.getpeername()[0])
            except OSError:  # the peer is gone already
                sock.close()
                continue
            self._take_connection(sock, address)
        if len(self._clients) >= self.max_clients:
            self._full()

    def _full(self) -> None:
        """As many connections as this process takes: no more accepted or taken over until one leaves."""
        log.warning("ingest: %d connections open, the most this process takes; new ones wait",
                    len(self._clients))
        self._pause_accepting(None)

    def _pause_accepting(self, until: float | None) -> None:
        """Stop watching the listener: until ``until``, or (None) until a client leaves.
        The kernel's backlog holds the connections meanwhile."""
        if self._accepting:
            self._selector.unregister(self.socket)
            if self._seat is not None:  # (what other workers hand over waits in the inbox meanwhile)
                self._selector.unregister(self._seat.inbox)
            self._accepting = False
        self._accept_rest_until = until or 0.0

    def _resume_accepting(self) -> None:
        if not self._accepting and len(self._clients) < self.max_clients:
            self._selector.register(self.socket, _READ, None)
            if self._seat is not None:
                self._selector.register(self._seat.inbox, _READ, _INBOX)
            self._accepting = True

    def _watch(self, client: _Client) -> None:
        """Register the client for what it waits for now: to take its answers (write), to
        send the rest of its request (read), or nothing (its request is being answered)."""
        if client.sock.fileno() < 0:
            return
        if client.parked:
            wanted = 0
        elif client.out:
            wanted = _WRITE
        elif client.wants_data and not client.eof and not client.closing:
            wanted = _READ
        else:
            wanted = 0
        if wanted == client.watched:
            return
        if not wanted:
            self._selector.unregister(client.sock)
        elif not client.watched:
            self._selector.register(client.sock, wanted, client)
        else:
            self._selector.modify(client.sock, wanted, client)
        client.watched = wanted

    def _close(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if fd < 0:
            return
        if client.watched:
            self._selector.unregister(client.sock)
            client.watched = 0
        del self._clients[fd]
        if self._seat is not None:
            self._seat.count(-1)
        self._release(client)
        _tally(self._per_address, client.address, -1)
        client.sock.close()
        if self._accept_rest_until == 0.0:
            self._resume_accepting()

    def _sweep(self, now: float, unread: set[_Client]) -> None:
        """Close what timed out by ``now`` (taken when ``select`` returned, so a busy turn
        counts against nobody); ``unread``: clients with bytes waiting that this turn had no
        room for, which are not silent."""
        if not self._accepting and self._accept_rest_until and now >= self._accept_rest_until:
            self._accept_rest_until = 0.0
            self._resume_accepting()
        for client in list(self._clients.values()):
            if client in unread:
                continue
            if client.started is not None and now - client.started > REQUEST_S:
                self._refuse(client, 408, f"request not complete within {REQUEST_S:.0f} s")
            elif client.watched and now - client.seen > IDLE_S:  # waiting for the peer, in vain
                self._close(client)

    def _receive(self, client: _Client, requests: list[tuple[_Client, bytes]]) -> None:
        try:
            data = client.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer
            self._close(client)
            return
        client.seen = time.monotonic()
        if data:
            if client.started is None:
                client.started = client.seen
            client.inbuf += data
        else:  # the peer closed its side: what it sent is all there will be
            client.eof = True
        self._take(client, requests)

    def _take(self, client: _Client, requests: list[tuple[_Client, bytes]]) -> None:
        """Take the request in hand off the client's buffer if it is all there: its head
        read (and judged) once the blank line has arrived, then its body once whole."""
        client.wants_data = False
        if client.need is None:  # its head
            request = self._head(client)
            if request is None:
                return
            client.need, client.keep_alive = request.length, request.keep_alive
        need = client.need
        assert need is not None  # (set just above, or by the turn that read the head)
        if not self._hold(client, min(len(client.inbuf), need)):
            return
        if len(client.inbuf) < need:
            if client.eof:
                self._refuse(client, 400, "malformed HTTP: the connection ended inside a request body")
            else:
                client.wants_data = True
                self._watch(client)
            return
        requests.append((client, bytes(client.inbuf[:need])))
        del client.inbuf[:need]
        self._release(client)
        client.need = client.started = None
        self._watch(client)

    def _head(self, client: _Client) -> RequestHead | None:
        """The head of the request in hand, read and judged, if it has all arrived; else
        None, and the client waits for more, is refused or is closed."""
        if client.inbuf and client.started is None:  # (pipelined: arrived with the one before)
            client.started = time.monotonic()
        try:
            end = head_end(client.inbuf, max(0, client.scanned - 3), HEADER_LIMIT + 4)
        except HeadRefused as exc:  # (a bare LF)
            self._refuse(client, exc.status, f"malformed HTTP: {exc.reason}", path=_request_line(client.inbuf))
            return None
        if end < 0:
            client.scanned = min(len(client.inbuf), HEADER_LIMIT + 4)
            if len(client.inbuf) > HEADER_LIMIT:
                self._refuse(client, 431, f"malformed HTTP: request head over {HEADER_LIMIT} bytes")
            elif client.eof and client.inbuf:
                self._refuse(client, 400, "malformed HTTP: the connection ended inside a request head")
            elif client.eof:  # between requests, and no answer owed (it would be in ``out``): done
                self._close(client)
            else:
                client.wants_data = True
                self._watch(client)
            return None
        head = bytes(client.inbuf[:end])
        del client.inbuf[:end]
        client.scanned = 0
        try:
            request = parse_head(head)
        except HeadRefused as exc:
            self._refuse(client, exc.status, f"malformed HTTP: {exc.reason}", path=_request_line(head))
            return None
        client.head = request.method == b"HEAD"
        problem = _request_problem(request)
        if problem is not None:
            self._refuse(client, *problem, path=request.target)
            return None
        return request

    def _hold(self, client: _Client, held: int) -> bool:
        """``held`` bytes of the client's body counted against the budgets; False (and the
        request refused) if that is more than its address or this worker may hold."""
        change, client.held = held - client.held, held
        self._buffered += change
        by_address = _tally(self._buffered_by, client.address, change)
        if by_address > ADDRESS_BODY_LIMIT:  # one address may not take the budget from the others
            self._refuse(client, 503, "too much arriving from this address at once; try again")
            return False
        if self._buffered > self.body_budget:
            self._refuse(client, 503, "too many deliveries arriving at once; try again")
            return False
        return True

    def _release(self, client: _Client) -> None:
        """The client's body no longer held (handed on, refused or closed)."""
        if client.held:
            self._buffered -= client.held
            _tally(self._buffered_by, client.address, -client.held)
            client.held = 0

    def _refuse(self, client: _Client, status: int, error: str, path: bytes = b"") -> None:
        """Answer a request refused before its body was read, and close: the unread bytes
        must not become the next request."""
        where = f" {path[:80]!r}" if path else ""
        log.warning("refused a request from %s%s: %s", client.address, where, printable(error))
        self._release(client)
        client.started = None
        self._send(client, status, {"error": error}, close=True)

    # -- answers ----------------------------------------------------------------------------

    def _answer_all(self, requests: list[tuple[_Client, bytes]]) -> None:
        """This turn's deliveries checked: refusals answered now, the admitted ones added
        to the batch for the next commit, their senders parked until it has ended."""
        for client, body in requests:
            try:
                result = admit(self.ctx, body, client.address)
            except Exception:  # a bug: the delivery is answered (and kept by its sender), the loop goes on
                log.exception("ingest failed on a delivery from %s", client.address)
                result = (500, {"error": "internal error in the ingest (logged); try again later"})
            if isinstance(result, Delivery):
                if not self._pending:
                    self._pending_since = time.monotonic()
                self._pending.append((client, result))
                client.parked = True
                self._watch(client)
            else:
                self._answer(client, result)

    def _commit(self) -> None:
        """The batch stored in one transaction, then each sender answered: an id only once
        committed, 503 for all if the commit failed. If another process holds SQLite's
        write lock, the batch waits for the next turn (up to ``LOCK_WAIT_S``, then 503)."""
        if not self._pending:
            return
        try:
            verdicts = store_all(self.ctx.store, [d for _, d in self._pending], dt.datetime.now(dt.UTC),
                                 wait=False)
        except WriteLockBusy:
            if time.monotonic() - self._pending_since < LOCK_WAIT_S:
                return
            self._give_back("cannot store now: the database stayed locked; try again")
            return
        except Exception:
            log.exception("storing %d deliveries failed; each answered 503", len(self._pending))
            self._give_back("cannot store now (logged); try again")
            return
        self._settle(verdicts)

    def _give_back(self, error: str) -> None:
        """Every waiting delivery answered 503, not stored: its sender keeps it and tries again."""
        self._settle([(503, {"error": error})] * len(self._pending))

    def _settle(self, verdicts: list[Verdict]) -> None:
        """The waiting batch ended: each sender unparked and answered its verdict."""
        batch, self._pending = self._pending, []
        for (client, _), verdict in zip(batch, verdicts, strict=True):
            client.parked = False
            self._answer(client, verdict)

    def _answer(self, client: _Client, verdict: Verdict) -> None:
        status, doc = verdict
        if status != 200:
            log.warning("refused delivery from %s: %s", client.address, printable(str(doc["error"])))
        self._send(client, status, doc)

    def _send(self, client: _Client, status: int, doc: dict[str, object], *, close: bool = False) -> None:
        if client.sock.fileno() < 0:
            return  # closed meanwhile (reset by the peer): its sender tries again
        data = dumps(doc)
        # another request may follow only after a whole one that allows it (HTTP/1.1 without
        # "Connection: close", ...); a request refused half read sets ``close`` (its unread
        # bytes must not become the next request)
        close = close or client.eof or not client.keep_alive
        client.out += _head(status, len(data), close)
        if not client.head:
            client.out += data
        if close:
            client.closing = True
        else:  # its next request may be in the buffer already
            client.head = False
            self._again.append(client)
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(client)
            return
        if sent:
            client.seen = time.monotonic()
            del client.out[:sent]
        if client.closing and not client.out:
            self._close(client)
            return
        if not client.out and client.watched == _WRITE:
            self._again.append(client)  # drained: a pipelined request may wait in its buffer
        self._watch(client)


def raise_open_files(wanted: int = 65536) -> int:
    """The soft limit on open files raised towards the hard one (a fleet keeps one
    connection per gateway open); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def serve(ctx: IngestContext, address: str, port: int, *, per_address: int = PER_ADDRESS,
          seat: Seat | None = None) -> IngestServer:
    """The ingest, on the tunnel server's address; ``seat``: one of several workers."""
    return IngestServer(ctx, address, port, per_address=per_address, seat=seat)
