"""The headend's ingest: one delivery in, verified, decrypted, checked, stored, acknowledged.

``admit`` and ``store_all`` decide (``ingest`` is the two for one delivery);
``headend.ingest_server`` is the HTTP server around them, bound to the tunnel server's own
address so only tunnel clients reach it. Every refusal is a 4xx with
the reason in the body and a log line; the sender's identity is checked three ways: the
signature chains to the pinned root with role gateway-sig and is not revoked, the document
names the signer as its gateway, and the delivery came through the tunnel of that same
gateway (its client certificate's CN, from the OpenVPN server's status file).

The read API (``serve_reads``) is a listener of its own, on the headend host's side
(loopback by default), never on the tunnel address: every gateway of the fleet reaches the
tunnel address, and one that could read there would read every other household's meter.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
import socket
import socketserver
import stat
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from headend.document import Delivery, DocumentError, parse
from headend.store import HeadendStore, HeadendStoreError, WriteLockBusy, dumps
from pki.cms import CmsError, RevokedError, verify
from pki.cms_envelope import KeyAgreement, decrypt
from pki.errors import PkiError

log = logging.getLogger("smgw.headend")
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class IngestContext:
    party: str
    root: x509.Certificate
    crl: x509.CertificateRevocationList
    enc_cert: x509.Certificate
    agree: KeyAgreement
    peer_cn: Callable[[str], str | None]  #: tunnel address of the sender -> its client certificate's CN
    store: HeadendStore


@lru_cache(maxsize=1024)
def _cn(cert: x509.Certificate) -> str:
    """Cached by the certificate (it hashes by its DER): the same few signers all day."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


Verdict = tuple[int, dict[str, object]]  #: (HTTP status, JSON body)


def printable(text: str) -> str:
    """``text`` for a log line: control characters escaped. A refusal's reason can quote
    what the sender wrote (a certificate's subject is anyone's to choose: the party's
    encryption certificate is public), and a CR or LF in it would forge log lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def admit(ctx: IngestContext, body: bytes, source_ip: str) -> Delivery | Verdict:
    """The delivery, if it passes every check but storing; else the refusal."""
    if len(body) > MAX_BODY:
        return 413, {"error": f"delivery over {MAX_BODY} bytes"}
    try:
        signed = decrypt(body, ctx.enc_cert, ctx.agree)
    except CmsError as exc:
        return 400, {"error": f"cannot decrypt: {type(exc).__name__}: {exc}"}
    try:
        content, signer = verify(signed, root=ctx.root, role="gateway-sig", crl=ctx.crl, require_crl=True)
    except RevokedError as exc:
        return 403, {"error": f"signer revoked: {exc}"}
    except PkiError as exc:
        return 403, {"error": f"signature refused: {type(exc).__name__}: {exc}"}
    try:
        delivery = parse(content)
    except DocumentError as exc:
        return 422, {"error": f"document: {exc}"}
    gateway = _cn(signer)
    if delivery.gateway != gateway:
        return 403, {"error": f"signed by {gateway} but names gateway {delivery.gateway}"}
    peer = ctx.peer_cn(source_ip)
    if peer is None:  # the server writes its client list every few seconds: a fresh connection is not in it yet
        return 503, {"error": f"the tunnel client at {source_ip} is not known yet; try again"}
    if peer != gateway:
        return 403, {"error": f"signed by {gateway} but sent through the tunnel of {peer}"}
    if delivery.party != ctx.party:
        return 422, {"error": f"addressed to party {delivery.party}, this is {ctx.party}"}
    return delivery


def store_all(store: HeadendStore, deliveries: Sequence[Delivery], now: dt.datetime, *,
              wait: bool = True) -> list[Verdict]:
    """Admitted deliveries stored in one transaction (see ``HeadendStore.store_many``), and
    each one's answer: its id acknowledged only once committed (409 if it was stored before,
    see ``_copy``), a 503 for all of them if the commit failed (not the senders' fault: each
    keeps its delivery and tries again). With ``wait=False``, ``WriteLockBusy`` if SQLite's
    write lock is taken (nothing done)."""
    received_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        fresh = store.store_many([(delivery, received_at) for delivery in deliveries], wait=wait)
    except WriteLockBusy:
        raise
    except HeadendStoreError as exc:
        return [(503, {"error": f"cannot store now: {exc}"})] * len(deliveries)
    return [(200, {"delivery_id": delivery.delivery_id, "stored": True}) if stored else _copy(store, delivery)
            for delivery, stored in zip(deliveries, fresh, strict=True)]


def _copy(store: HeadendStore, delivery: Delivery) -> Verdict:
    """A delivery whose id is stored already is refused, 409, not stored again: a replay, or
    a copy sent again because the first answer never reached the gateway. The two look alike
    (the same signed bytes from the same gateway's tunnel), so the answer names the id and
    says it is held: the gateway's outbox takes that as the acknowledgement it missed.

    Only if the stored one is this gateway's: another gateway's delivery under the same id
    (ids are random; one that collides or was chosen to) is refused without saying it is
    held, so its sender sets it aside, logged, rather than take it as delivered."""
    try:
        stored = store.delivery(delivery.delivery_id)
    except HeadendStoreError as exc:
        return 503, {"error": f"cannot check the stored copy now: {exc}"}
    if stored is None or stored["gateway"] != delivery.gateway:
        return 409, {"error": f"delivery id {delivery.delivery_id} is another gateway's delivery; not stored"}
    return 409, {"delivery_id": delivery.delivery_id, "stored": False,
                 "error": f"delivery {delivery.delivery_id} of {delivery.gateway} is stored already (a replay, "
                          "or a copy sent again); not stored twice"}


def ingest(ctx: IngestContext, body: bytes, source_ip: str, now: dt.datetime) -> Verdict:
    """(HTTP status, JSON body) for one POSTed delivery."""
    admitted = admit(ctx, body, source_ip)
    if isinstance(admitted, tuple):
        return admitted
    return store_all(ctx.store, [admitted], now)[0]


def status_file_peers(path: Path) -> Callable[[str], str | None]:
    """Tunnel address -> client CN, read from the OpenVPN server's ``status-version 3`` file
    (re-read whenever the server rewrote it: a gateway that reconnected may hold another
    address, or its old one may now be another gateway's)."""
    cache: dict[str, str] = {}
    seen: list[int] = [-1]
    told: list[str] = [""]  # the last read failure logged: once each, not once a delivery

    def load() -> None:
        try:
            stamp = path.stat().st_mtime_ns
            if stamp == seen[0]:
                return
            lines = path.read_text().splitlines()
        except FileNotFoundError:  # the server has not written it yet
            return
        except OSError as exc:  # unreadable (its mode, its owner): every sender would wait in vain
            if str(exc) != told[0]:
                told[0] = str(exc)
                log.error("cannot read the tunnel server's client list %s (%s): deliveries are refused "
                          "503 until it can be read", path, exc.strerror or exc)
            return
        told[0] = ""
        seen[0] = stamp
        cache.clear()
        for line in lines:
            fields = line.split("\t")
            if fields[0] == "CLIENT_LIST" and len(fields) > 3:
                cache[fields[3]] = fields[1]

    def lookup(address: str) -> str | None:
        load()
        return cache.get(address)

    return lookup


_READINGS = re.compile(r"/v1/meters/([A-Za-z0-9][A-Za-z0-9._:-]{0,63})/readings")
_DELIVERY = re.compile(r"/v1/deliveries/([0-9a-f]{32})")


class _Json(BaseHTTPRequestHandler):
    server_version = "smgw-headend"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # keep-alive: a gateway sends its backlog over one connection
    timeout = 30  # an idle keep-alive connection does not hold its thread for ever
    # buffered: a reply's status line, headers and body leave in one send when
    # handle_one_request flushes, not in two (each send on loopback costs ~70 us)
    wbufsize = 1 << 16

    def setup(self) -> None:
        super().setup()
        # a reply must leave now, not when Nagle's algorithm has the previous one's ACK
        # (up to the client's delayed-ACK 40 ms on a keep-alive connection)
        if self.connection.family != socket.AF_UNIX:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def address_string(self) -> str:
        if self.connection.family == socket.AF_UNIX:
            return "unix"  # a client's own path (or none) says nothing about who it is
        return str(self.client_address[0])

    def _reply(self, status: int, doc: dict[str, object] | list[dict[str, object]],
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        data = dumps(doc)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:  # say so: the client must not send its next request on it
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def make_read_handler(store: HeadendStore) -> type[BaseHTTPRequestHandler]:
    """The back office's side: the stored readings and deliveries, read only."""

    class Handler(_Json):
        def do_POST(self) -> None:
            self.close_connection = True  # the body is not read
            self._reply(405, {"error": "the read API takes no deliveries: they come through the tunnels"},
                        (("Allow", "GET"),))

        def do_GET(self) -> None:
            try:
                self._get()
            except HeadendStoreError as exc:
                self._reply(503, {"error": f"cannot read now: {exc}"})

        def _get(self) -> None:
            url = urlsplit(self.path)
            readings, one = _READINGS.fullmatch(url.path), _DELIVERY.fullmatch(url.path)
            if readings:
                query = parse_qs(url.query)
                since, until = query.get("from", [""])[0], query.get("to", ["9999"])[0]
                if not re.fullmatch(r"[0-9T:Z-]{0,20}", since) or not re.fullmatch(r"[0-9T:Z-]{0,20}", until):
                    self._reply(400, {"error": "from/to: ISO-8601 UTC times"})
                    return
                self._reply(200, store.readings(readings.group(1), since, until))
            elif one:
                found = store.delivery(one.group(1))
                self._reply(200, found) if found else self._reply(404, {"error": "no such delivery"})
            else:
                self._reply(404, {"error": "unknown path"})

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_port = True  # several ingest processes on one port; the kernel spreads connections


def serve_reads(store: HeadendStore, address: str, port: int) -> ThreadingHTTPServer:
    """The read API, on a loopback address of the headend host (see ``headend.config``); no
    ``IP_FREEBIND`` here: an address that does not exist is an error, not a wait."""
    return _Server((address, port), make_read_handler(store))


SOCKET_MODE = 0o660


@dataclass
class ReadSocket:
    """The read API's listening Unix socket. The process that starts the ingest workers makes
    it before it forks them (so it holds a socket, never a thread or a database connection,
    when it forks one again), and every worker serves it, as their TCP listeners share a
    port. Only this owner removes the file, and only the socket it made."""

    path: Path
    sock: socket.socket
    inode: tuple[int, int]  #: (device, inode) of the socket file it made

    @classmethod
    def listen(cls, path: Path) -> ReadSocket:
        """Reachable only to the processes its mode lets connect (the headend's user and
        group), where 127.0.0.1 reaches every local user. A socket left by a headend that was
        killed is replaced; any other file there is an error."""
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                _unlink_if_stale(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)  # made 0600: nobody else can connect before it gets its mode
            try:
                sock.bind(str(path))
            finally:
                os.umask(old)
            found = os.lstat(path)
            made = (found.st_dev, found.st_ino)
            os.chmod(path, SOCKET_MODE)  # (its folder is the headend's own: nobody swaps it meanwhile)
            sock.listen(64)
        except BaseException:
            sock.close()
            raise
        return cls(path, sock, made)

    def close(self) -> None:
        """Removes the file while the socket is still open (so its inode cannot have been
        reused by another), and only if it is still the socket this made."""
        with suppress(FileNotFoundError):
            found = os.lstat(self.path)
            if stat.S_ISSOCK(found.st_mode) and (found.st_dev, found.st_ino) == self.inode:
                os.unlink(self.path)
        self.sock.close()


def _unlink_if_stale(path: Path) -> None:
    """A socket nobody listens on is left by a headend that was killed: removed. One that
    answers is another headend's (or another program's): refused, never taken over."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path}: another process serves this socket")


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve_reads_unix(store: HeadendStore, listener: ReadSocket) -> socketserver.BaseServer:
    """The read API on ``listener`` (made by ``ReadSocket.listen``); closing this server closes
    only this process's handle on it."""
    server = _UnixServer(str(listener.path), make_read_handler(store), bind_and_activate=False)
    server.socket.close()
    server.socket = listener.sock
    return server

