"""The admin API's application: what the GWA may ask a gateway over the admin tunnel.

Pure request handling (``AdminApi.handle``: method, path, query, body in; status and a JSON
document out) behind a small HTTP server on a Unix socket, 0600, in ``<paths.run>``. The
socket is reached only through ``admin_tls`` (stunnel: TLS with the gateway's ``gateway-api``
key in the token, the GWA's client certificate required), which listens on the admin tunnel's
address alone; the firewall admits the API port only from ``tun_admin``.

Reads: ``/v1/status``, ``/v1/selftest``, ``/v1/log``. Every request is written to the system
log (``admin.request``: method, path, status; never a body).
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from appliance.config import GatewayConfig
from appliance.selftest import blocking, read_results
from appliance.store import Store, StoreError
from appliance.tunnel_states import read_states

log = logging.getLogger("smgw.admin_api")
MAX_BODY = 64 * 1024
MAX_ROWS = 5000
Result = tuple[int, Any]


def _error(status: int, message: str) -> Result:
    return status, {"error": message}


class AdminApi:
    def __init__(self, cfg: GatewayConfig, on_request: Callable[[dict[str, object]], None] = lambda doc: None
                 ) -> None:
        self.cfg = cfg
        self.on_request = on_request
        self._lock = threading.Lock()  # the GWA is one client: requests take turns
        self.store: Store | None = None

    def handle(self, method: str, target: str, body: bytes = b"") -> Result:
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True, max_num_fields=20)
        try:
            with self._lock, Store.open(self.cfg.store.path, read_only=True) as self.store:
                status, doc = self._route(method, parts.path, query, body)
        except ValueError as exc:
            status, doc = _error(400, str(exc))
        except StoreError as exc:
            status, doc = _error(503, f"store unavailable: {exc}")
        self.on_request({"method": method, "path": parts.path[:200], "status": status})
        return status, doc

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Result:
        routes: dict[str, Callable[[dict[str, list[str]]], Result]] = {
            "/v1/status": self._status, "/v1/selftest": self._selftest, "/v1/log": self._log}
        if path not in routes:
            return _error(404, f"no such resource {path[:100]!r}")
        if method != "GET":
            return _error(405, f"{method} not allowed on {path}")
        return routes[path](query)

    def _store(self) -> Store:
        assert self.store is not None, "only inside handle()"
        return self.store

    def _status(self, _query: dict[str, list[str]]) -> Result:
        checks = read_results(self.cfg)
        latest = self._store().latest_readout()
        return 200, {
            "gateway": self.cfg.gateway.id, "time": datetime.now(UTC).isoformat(),
            "sending": not blocking(checks),
            "tunnels": read_states(self.cfg.paths.run, [p.name for p in self.cfg.parties]),
            "last_readout": None if latest is None else {"meter": latest.meter_id, "at": latest.read_at.isoformat()},
            "readouts": self._store().count_readouts(), "outbox_pending": self._store().pending_count(),
            "outbox_refused": self._store().refused_count(),
            "profiles": [p.name for p in self.cfg.profiles],
            "selftests": {name: asdict(c) for name, c in sorted(checks.items())}}

    def _selftest(self, _query: dict[str, list[str]]) -> Result:
        checks = read_results(self.cfg)
        return 200, {"sending": not blocking(checks), "checks": [asdict(c) for _, c in sorted(checks.items())]}

    def _log(self, query: dict[str, list[str]]) -> Result:
        name = _one(query, "log", "system")
        if name not in ("system", "calibration", "consumer"):
            raise ValueError("log: system, calibration or consumer")
        since_text = _one(query, "since", "")
        since = None
        if since_text:
            try:
                since = datetime.fromisoformat(since_text)
            except ValueError:
                raise ValueError("since: an ISO 8601 time") from None
            since = since.replace(tzinfo=UTC) if since.tzinfo is None else since
        try:
            limit = int(_one(query, "limit", "1000"))
        except ValueError:
            raise ValueError("limit: a number") from None
        if not 1 <= limit <= MAX_ROWS:
            raise ValueError(f"limit: 1 to {MAX_ROWS}")
        rows = self._store().audit_rows(name, since=since, limit=limit)
        return 200, {"log": name, "rows": [{"seq": r.seq, "at": r.at, "event": r.event, "consumer": r.consumer,
                                            "detail": json.loads(r.detail)} for r in rows]}


def _one(query: dict[str, list[str]], key: str, default: str) -> str:
    values = query.get(key)
    if not values:
        return default
    if len(values) > 1:
        raise ValueError(f"{key}: given twice")
    return values[0][:200]


class _Handler(BaseHTTPRequestHandler):
    server: _UnixHttpServer
    protocol_version = "HTTP/1.1"
    server_version = "smgw-admin"
    sys_version = ""

    def address_string(self) -> str:
        return "admin-tunnel"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("admin api: " + format, *args)

    def _serve(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            status, doc = _error(413, f"body over {MAX_BODY} bytes")
            body = b""
        else:
            body = self.rfile.read(int(length))
            status, doc = self.server.api.handle(self.command, self.path, body)
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = _serve


class _UnixHttpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, api: AdminApi) -> None:
        self.api = api
        path.unlink(missing_ok=True)
        old = os.umask(0o177)  # the socket 0600: only this user (stunnel runs as it) connects
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)


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
