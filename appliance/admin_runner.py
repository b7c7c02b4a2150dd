"""The admin API's life: up with the admin tunnel, down with it.

On CONNECTED the GateWatcher starts the API on its Unix socket and stunnel on the tunnel's
address; on any other state both stop, so the API is never reachable without the tunnel.
A missing ``gateway-api`` certificate or a missing stunnel is a logged refusal to serve the
API; the tunnel itself stays (the GWA still sees the gateway come up).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable

from cryptography.hazmat.primitives.serialization import Encoding

from appliance.admin_api import AdminApi
from appliance.admin_http import ApiServer
from appliance.admin_tls import TlsFront, TlsView
from appliance.config import GatewayConfig
from appliance.errors import SmgwError
from appliance.files import write_atomic
from appliance.gateway_token import gateway_token
from appliance.store import Store
from pki.token import TokenError, read_pin

log = logging.getLogger("smgw.admin_api")
Decided = Callable[[dict[str, object]], None]


class AdminApiRunner:
    def __init__(self, cfg: GatewayConfig, store: Store, decided: Decided) -> None:
        self.cfg = cfg
        self.store = store
        self.decided = decided
        self.server: ApiServer | None = None
        self.front: TlsFront | None = None  #: set once it listens: the API was announced up
        # requests are answered on the API's threads; their log rows are written on the
        # GateWatcher's (the store connection and the audit chain belong to it): ``drain``
        self.requests: queue.SimpleQueue[dict[str, object]] = queue.SimpleQueue()

    def drain(self) -> None:
        while True:
            try:
                doc = self.requests.get_nowait()
            except queue.Empty:
                return
            self.decided({"event": "admin-api", **doc})

    @property
    def up(self) -> bool:
        """Serving: the TLS front started and its stunnel still runs (one that died later is
        started again by the GateWatcher's retry, like one that did not come up)."""
        return self.front is not None and self.front.running()

    def start(self, address: str) -> bool:
        """The API and its TLS front on ``address``; False (and a logged refusal) if either
        did not come up."""
        self.stop()
        admin = self.cfg.admin
        if admin is None:
            return False
        run = self.cfg.paths.run
        try:
            cert = gateway_token(self.cfg).certificate(admin.api_key)
            if cert is None:
                raise SmgwError(f"no certificate for token key {admin.api_key!r} (role gateway-api)")
            write_atomic(run / "admin-api.crt", cert.public_bytes(Encoding.PEM).decode(), 0o644)
            api = AdminApi(self.cfg, self.requests.put)
            self.server = ApiServer(run / "admin-api.sock", api)
            self.server.start()
            view = TlsView(module=self.cfg.token.module, pin=read_pin(self.cfg.token.pin_file), address=address,
                           port=admin.api_port, socket=run / "admin-api.sock", cert=run / "admin-api.crt",
                           token_label=self.cfg.token.label, key_label=admin.api_key, root=self.cfg.pki.root,
                           crl=self.cfg.pki.crl, gwa_name=admin.server_name, profile=admin.profile)
            front = TlsFront(view, run)
            front.start()  # (a front that does not come up stops itself before it raises)
            self.front = front
        except (SmgwError, TokenError, OSError) as exc:
            self.stop()
            self.decided({"event": "admin-api-refused", "reason": f"{type(exc).__name__}: {exc}"})
            return False
        self.decided({"event": "admin-api-up", "address": address, "port": admin.api_port})
        return True

    def stop(self) -> None:
        was_up = self.front is not None  # a refused start was never up: no "down" for it
        if self.front is not None:
            self.front.stop()
            self.front = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if was_up:
            self.decided({"event": "admin-api-down"})
