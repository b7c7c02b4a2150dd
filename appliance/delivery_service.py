"""Processor and sender wired to the token, the certificates and the tunnels' state.

Runs after each stored readout (inside ``smgw gateway run``): queue what is due, then send
each party's deliveries if its tunnel is CONNECTED, bound to the tunnel's address that the
supervisors wrote to ``<paths.run>/tunnels/``. No tunnel, no sending: the outbox waits.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from ipaddress import IPv4Interface

from appliance.audit import mac_source
from appliance.config import GatewayConfig
from appliance.errors import SmgwError
from appliance.gateway_token import gateway_token
from appliance.processor import SealKit, process, pseudonym_from_hmac
from appliance.sender import Route, send_due
from appliance.store import Store
from appliance.tunnel_states import read_states
from pki.encoding import read_certificate
from pki.token import Token, TokenError

log = logging.getLogger("smgw.delivery")


class DeliveryService:
    def __init__(self, cfg: GatewayConfig, token: Token | None = None) -> None:
        self.cfg = cfg
        self.token = token or gateway_token(cfg)
        cert = self.token.certificate(cfg.gateway.sig_key)
        if cert is None:
            raise SmgwError(f"token key {cfg.gateway.sig_key!r} has no certificate: enrol it (role gateway-sig)")
        label = cfg.gateway.sig_key
        self.kit = SealKit(
            gateway_id=cfg.gateway.id, sig_cert=cert, signer=lambda digest: self.token.sign_digest(label, digest),
            enc_certs={p.name: read_certificate(p.encryption_cert_path) for p in cfg.parties
                       if any(profile.party == p.name for profile in cfg.profiles)},
            pseudonym=self._pseudonym)
        self.rng = random.Random()
        self.macs = mac_source(cfg, create=True)  # seals each acknowledgement's consumer-log row
        self._up: dict[str, str] = {}  # party -> local tunnel address while CONNECTED

    def _pseudonym(self, party: str, meter_id: str) -> str:
        label = f"pseudonym-{party}"
        try:
            return pseudonym_from_hmac(self.token.hmac_sha256(label, meter_id.encode()))
        except TokenError:
            self.token.generate_secret(label)  # first use: the key is born inside the token
            log.info("pseudonym key %s generated in the token", label)
            return pseudonym_from_hmac(self.token.hmac_sha256(label, meter_id.encode()))

    def routes(self) -> list[Route]:
        tunnels = {t["name"]: t for t in read_states(self.cfg.paths.run)}
        out = []
        for party in self.cfg.parties:
            state = tunnels.get(party.name, {})
            if state.get("state") != "CONNECTED" or not state.get("local_ip"):
                continue
            local = str(state["local_ip"])
            host = str(party.ingest_address or IPv4Interface(f"{local}/24").network[1])
            out.append(Route(party.name, host, party.ingest_port, local))
        return out

    def __call__(self, store: Store, meter_id: str) -> None:
        now = dt.datetime.now(dt.UTC)
        queued = process(self.cfg.profiles, store, self.kit, meter_id, now)
        if queued:
            log.info("queued %d deliveries", queued)
        routes = self.routes()
        for route in routes:
            # (back) up: no need to wait out the backoff
            if self._up.get(route.party) != route.source and store.retry_now(route.party, now):
                log.info("tunnel %s is up: sending its waiting deliveries now", route.party)
            sent = send_due(store, route, now, self.rng, macs=self.macs)
            if sent:
                log.info("sent %d deliveries to %s", sent, route.party)
        self._up = {route.party: route.source or "" for route in routes}
