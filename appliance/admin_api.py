"""The admin API's application: what the GWA may ask a gateway over the admin tunnel.

Pure request handling (``AdminApi.handle``: method, path, query, body in; status and a JSON
document out) behind a small HTTP server (``admin_http``) on a Unix socket, 0600, in
``<paths.run>``. The
socket is reached only through ``admin_tls`` (stunnel: TLS with the gateway's ``gateway-api``
key in the token, the GWA's client certificate required), which listens on the admin tunnel's
address alone; the firewall admits the API port only from ``tun_admin``.

Reads: ``/v1/status``, ``/v1/selftest``, ``/v1/log``, ``/v1/profiles``. Changes:
``PUT``/``DELETE /v1/profiles/<name>`` with a document signed by the GWA's admin key
(``pki.admin_doc``: role, chain, CRL, this gateway's id, the time window and the WakeUp's
replay cache all checked); the profile lands in ``<paths.state>/profiles.d`` and the core
picks it up at its next poll. Every request is written to the system log (method, path,
status, and for a change who signed it; never a body).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from appliance.config import INSTALLED_DIR, GatewayConfig, installed_profiles
from appliance.config_snapshot import profiles_in_child, to_data
from appliance.errors import ConfigError
from appliance.files import write_atomic
from appliance.gateway_token import gateway_token
from appliance.profiles import check_profiles
from appliance.selftest import blocking, read_results
from appliance.store import Store, StoreError
from appliance.tunnel_states import read_states
from pki.admin_doc import decode as decode_admin_doc
from pki.cms import check_certificate
from pki.encoding import read_certificate, read_crl
from pki.errors import PkiError
from pki.profiles import Role
from pki.token import TokenError

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
        self.changes: list[dict[str, object]] = []
        folder = cfg.paths.state / INSTALLED_DIR
        #: the profiles of the config file itself (``cfg`` holds the installed ones too)
        self.file_profiles = {p.name for p in cfg.profiles} - {f.stem for f in folder.glob("*.json")}
        self._lock = threading.Lock()  # the GWA is one client: requests take turns
        self.store: Store | None = None

    def handle(self, method: str, target: str, body: bytes = b"") -> Result:
        path = target.partition("?")[0]
        try:  # (urlsplit and parse_qs refuse a bad target or too many fields with ValueError)
            parts = urlsplit(target)
            path = parts.path
            query = parse_qs(parts.query, keep_blank_values=True, max_num_fields=20)
            with self._lock, Store.open(self.cfg.store.path, read_only=True) as self.store:
                status, doc = self._route(method, path, query, body)
        except ValueError as exc:
            status, doc = _error(400, str(exc)[:200])
        except StoreError as exc:
            status, doc = _error(503, f"store unavailable: {exc}")
        extra = self.changes.pop() if self.changes else {}
        self.on_request({"method": method, "path": path[:200], "status": status, **extra})
        return status, doc

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Result:
        if path.startswith("/v1/profiles/"):
            return self._profile(method, path[len("/v1/profiles/"):], body)
        if path == "/v1/cert/csr" and method == "GET":
            return self._csr(query)
        if path == "/v1/cert":
            return self._certificate(query, body) if method == "PUT" else _error(405, f"{method} not allowed")
        routes: dict[str, Callable[[dict[str, list[str]]], Result]] = {
            "/v1/status": self._status, "/v1/selftest": self._selftest, "/v1/log": self._log,
            "/v1/profiles": self._profiles}
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


    # -- certificate renewal: the CSR from the token out, the issued certificate in ---------

    def _key_roles(self) -> dict[str, Role]:
        roles: dict[str, Role] = {p.key_label: "gateway-tls" for p in self.cfg.parties}
        if self.cfg.admin is not None:
            roles[self.cfg.admin.token_key] = "gateway-tls"
            roles[self.cfg.admin.api_key] = "gateway-api"
        roles[self.cfg.gateway.sig_key] = "gateway-sig"
        return roles

    def _key(self, query: dict[str, list[str]]) -> tuple[str, Role]:
        label = _one(query, "key", "")
        roles = self._key_roles()
        if label not in roles:
            raise ValueError(f"key: one of the gateway's certified keys ({', '.join(sorted(roles))})")
        return label, roles[label]

    def _csr(self, query: dict[str, list[str]]) -> Result:
        label, role = self._key(query)
        try:
            csr = gateway_token(self.cfg).make_csr(label, self.cfg.gateway.id)
        except (TokenError, PkiError) as exc:
            return _error(503, f"token: {exc}")
        return 200, {"key": label, "role": role, "name": self.cfg.gateway.id,
                     "csr": csr.public_bytes(Encoding.PEM).decode()}

    def _certificate(self, query: dict[str, list[str]], body: bytes) -> Result:
        label, role = self._key(query)
        try:
            cert = x509.load_pem_x509_certificate(body)
        except ValueError:
            return _error(400, "body is not a PEM certificate")
        try:
            check_certificate(cert, root=read_certificate(self.cfg.pki.root), role=role,
                              crl=read_crl(self.cfg.pki.crl), require_crl=True)
            names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
            if names != [self.cfg.gateway.id]:
                return _error(403, f"certificate names {names}, not this gateway {self.cfg.gateway.id}")
            gateway_token(self.cfg).import_certificate(label, cert)
        except (TokenError, PkiError) as exc:
            return _error(403, f"certificate refused: {type(exc).__name__}: {exc}")
        self.changes.append({"action": "cert.renewed", "key": label, "serial": format(cert.serial_number, "x")})
        return 200, {"key": label, "serial": format(cert.serial_number, "x"),
                     "not_after": cert.not_valid_after_utc.isoformat(),
                     "note": "in use from the next start of the tunnel or service that uses this key"}

    # -- access profiles ---------------------------------------------------------------------

    def _profiles(self, _query: dict[str, list[str]]) -> Result:
        own = [{**to_data(p), "installed": False} for p in self.cfg.profiles if p.name in self.file_profiles]
        try:
            listed = installed_profiles(self.cfg, taken=self.file_profiles, verify_all=profiles_in_child)
        except ConfigError as exc:
            return _error(503, str(exc))
        installed = [{**to_data(p), "installed": True} for p in listed]
        return 200, {"profiles": own + installed}

    def _profile(self, method: str, name: str, body: bytes) -> Result:
        action = {"PUT": "profile.put", "DELETE": "profile.rm"}.get(method)
        if action is None:
            return _error(405, f"{method} not allowed on /v1/profiles/<name>")
        try:
            doc, signer = decode_admin_doc(body, root=read_certificate(self.cfg.pki.root),
                                           crl=read_crl(self.cfg.pki.crl))
        except PkiError as exc:
            return _error(403, f"document refused: {type(exc).__name__}: {exc}")
        now = datetime.now(UTC)
        who = {"signer": signer.subject.rfc4514_string()[:200], "serial": format(signer.serial_number, "x")}
        if doc.gateway_id != self.cfg.gateway.id:
            return _error(403, f"document is addressed to gateway {doc.gateway_id}")
        if doc.action != action or doc.name != name:
            return _error(400, f"document is {doc.action} of {doc.name!r}, the request {method} of {name!r}")
        skew = abs((now - doc.issued_at).total_seconds())
        if skew > self.cfg.wakeup.window_s:
            return _error(403, f"document issued {skew:.0f} s away from gateway time (window "
                               f"{self.cfg.wakeup.window_s:g} s)")
        target = self.cfg.paths.state / INSTALLED_DIR / f"{name}.json"
        if doc.action == "profile.put":
            problem = self._check_profile(doc.profile or {})
            if problem is not None:
                return problem
        elif not target.exists():
            return _error(404, f"no installed profile {name!r}")
        with Store.open(self.cfg.store.path) as store:
            replay = store.accept_wakeup(nonce=doc.nonce, sequence=doc.sequence, action=doc.action,
                                         issued_at=doc.issued_at, now=now)
        if replay is not None:
            return _error(409, replay)
        if doc.action == "profile.put":
            write_atomic(target, json.dumps({"profile": doc.profile, "installed_at": now.isoformat(), **who,
                                             "document": base64.b64encode(body).decode()}, indent=1), 0o640)
        else:
            target.unlink()
        self.changes.append({"action": doc.action, "profile": name, **who})
        return 200, {"done": doc.action, "profile": name}

    def _check_profile(self, data: dict[str, Any]) -> Result | None:
        try:  # by a child: the GateWatcher may be a thread of the core, which keeps pydantic out
            (profile,) = profiles_in_child([data])
        except ConfigError as exc:
            return _error(503, str(exc))
        if isinstance(profile, tuple):
            where, message = profile
            return _error(400, f"profile {where if where != '(top level)' else '(profile)'}: {message}")
        if profile.name in self.file_profiles:
            return _error(409, f"profile {profile.name!r} is defined in the config file; change it there")
        problems = check_profiles([profile], [p.name for p in self.cfg.parties], self.cfg.meter.poll_interval,
                                  self.cfg.meter.load_profile)
        if problems:
            return _error(400, f"profile {problems[0][0].replace('profiles[0]', profile.name)}: {problems[0][1]}")
        return None


def _one(query: dict[str, list[str]], key: str, default: str) -> str:
    values = query.get(key)
    if not values:
        return default
    if len(values) > 1:
        raise ValueError(f"{key}: given twice")
    return values[0][:200]
