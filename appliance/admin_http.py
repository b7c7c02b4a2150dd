"""The admin API's HTTP/1.1 server on its Unix socket (0600, in ``<paths.run>``).

h11 turns the bytes into requests (the sans-I/O state machine the delivery sender uses
too); ``AdminApi.handle`` answers them. Not ``http.server``: that would bring
``http.client``, ``email`` and ``ssl`` into the core, a few megabytes of a 512 MB board for
a socket only stunnel ever connects to. Whatever arrives that is not HTTP, or is larger than
the API takes, gets its 4xx and the connection closes; the server goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import h11

from appliance.admin_api import MAX_BODY, AdminApi, Result

log = logging.getLogger("smgw.admin_api")
HEADER_LIMIT = 16 * 1024  #: request line and headers; the API's targets are short
REQUEST_S = 60.0  #: one request, from its first byte to its last, or between two requests
MAX_CONNECTIONS = 4  #: the GWA is one client (stunnel opens one connection per its session)
LINGER_S = 1.0  #: after a refusal, how long the rest of the request is read and dropped
LINGER_BYTES = 1 << 20


def _declared_length(request: h11.Request) -> int:
    lengths = [v for k, v in request.headers if k == b"content-length"]
    return int(lengths[0]) if lengths else 0  # h11 admits digits only, and one value


class _Handler(socketserver.BaseRequestHandler):
    """One connection from stunnel: requests in turn (keep-alive) until either side closes."""

    server: _UnixHttpServer
    request: socket.socket

    def handle(self) -> None:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=HEADER_LIMIT)
        try:
            while self._exchange(http):
                http.start_next_cycle()
        except (OSError, h11.LocalProtocolError) as exc:  # the peer went, was too slow, or is past answering
            log.debug("admin api: connection ended: %s", exc)
        except Exception:  # a bug of ours: this request fails, the server goes on
            log.exception("admin api: request failed")
            with contextlib.suppress(OSError, h11.LocalProtocolError):
                self._reply(http, (500, {"error": "internal error (logged on the gateway)"}), close=True)

    def _exchange(self, http: h11.Connection) -> bool:
        """Read one request (within ``REQUEST_S``) and answer it; whether the connection can carry another."""
        deadline = time.monotonic() + REQUEST_S
        request, body = None, bytearray()
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                return self._reply(http, (exc.error_status_hint, {"error": f"not an HTTP request: {exc}"}),
                                   close=True, head=_is_head(request))
            if event is h11.NEED_DATA:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no complete request in time")
                self.request.settimeout(left)
                http.receive_data(self.request.recv(65536))
            elif isinstance(event, h11.Request):
                request = event
                if _declared_length(event) > MAX_BODY:  # answered before reading a byte of it
                    return self._refuse_body(http, request)
                if http.they_are_waiting_for_100_continue:  # (curl's Expect: 100-continue)
                    self.request.sendall(http.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:  # chunked: the length shows only as it comes
                    return self._refuse_body(http, request)
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                # latin-1 maps every byte: the API's own checks judge what the path says
                answer = self.server.api.handle(request.method.decode("ascii"), request.target.decode("latin-1"),
                                                bytes(body))
                return self._reply(http, answer, close=False, head=_is_head(request))
            else:  # ConnectionClosed, or nothing this API takes (an upgrade): done with it
                return False

    def _refuse_body(self, http: h11.Connection, request: h11.Request | None) -> bool:
        return self._reply(http, (413, {"error": f"body over {MAX_BODY} bytes"}), close=True, head=_is_head(request))

    def _reply(self, http: h11.Connection, answer: Result, *, close: bool, head: bool = False) -> bool:
        status, doc = answer
        data = json.dumps(doc).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                   ("Cache-Control", "no-store"), ("Server", "smgw-admin")]
        if close:  # the client must not send its next request on this connection
            headers.append(("Connection", "close"))
        events: list[h11.Event] = [h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase)]
        events += [h11.EndOfMessage()] if head else [h11.Data(data=data), h11.EndOfMessage()]
        self.request.sendall(b"".join(http.send(e) or b"" for e in events))
        if close:
            self._linger()
            return False
        return http.our_state is h11.DONE and http.their_state is h11.DONE

    def _linger(self) -> None:
        """Read and drop what the client still sends before closing: closing with unread bytes
        makes the kernel reset the connection, and the client may lose the answer."""
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_WR)
            deadline, dropped = time.monotonic() + LINGER_S, 0
            while dropped < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.request.settimeout(left)
                chunk = self.request.recv(65536)
                if not chunk:
                    break
                dropped += len(chunk)


def _is_head(request: h11.Request | None) -> bool:
    return request is not None and request.method == b"HEAD"


class _UnixHttpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, api: AdminApi) -> None:
        self.api = api
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        path.unlink(missing_ok=True)
        old = os.umask(0o177)  # the socket 0600: only this user (stunnel runs as it) connects
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection, at most ``MAX_CONNECTIONS``: one more is closed at once."""
        if not self.slots.acquire(blocking=False):
            log.warning("admin api: %d connections open already; one more refused", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class ApiServer:
    """The API on its Unix socket, in a thread; ``stop`` removes the socket."""

    def __init__(self, path: Path, api: AdminApi) -> None:
        self.path = path
        self._server = _UnixHttpServer(path, api)
        self._thread = threading.Thread(target=self._server.serve_forever, name="admin-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)
