"""The GateWatcher: signed WakeUp/BreakUp datagrams in, the admin tunnel up or down.

``judge`` is the whole decision as a function of the datagram, this gateway's id, the
pinned root and CRL, the clock and the replay cache: every refusal names its reason. The
``GateWatcher`` around it reads the UDP socket (size-capped, rate-limited, so a flood costs
a bounded amount of CPU), and starts the admin tunnel to the destination in this gateway's
own config (never to an address from the message or the datagram's source), at most one,
closed by BreakUp, by the idle timeout, or by the maximum lifetime.
"""

from __future__ import annotations

import datetime as dt
import logging
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from appliance.config import GatewayConfig
from appliance.store import Store
from appliance.tunnels import Supervisor
from appliance.zone_policy import tunnel_device
from pki.errors import PkiError
from pki.wakeup import MAX_DATAGRAM, WakeupBody, decode

log = logging.getLogger("smgw.gatewatcher")
ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Accepted:
    body: WakeupBody


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


def judge(datagram: bytes, *, gateway_id: str, root: x509.Certificate, crl: x509.CertificateRevocationList,
          now: dt.datetime, window_s: float, store: Store) -> Accepted | Refused:
    """Accept only if signature, chain, role, revocation, id, time window and replay all hold;
    only an accepted message is written to the replay cache."""
    try:
        body = decode(datagram, root=root, crl=crl, now=now)
    except PkiError as exc:
        return Refused(f"{type(exc).__name__}: {exc}")
    if body.gateway_id != gateway_id:
        return Refused(f"addressed to gateway {body.gateway_id}, this is {gateway_id}")
    skew = (body.issued_at - now).total_seconds()
    if skew > window_s:
        return Refused(f"issued {skew:.0f} s in the future (window {window_s:.0f} s)")
    if skew < -window_s:
        return Refused(f"stale: issued {-skew:.0f} s ago (window {window_s:.0f} s)")
    replay = store.accept_wakeup(nonce=body.nonce, sequence=body.sequence, action=body.action,
                                 issued_at=body.issued_at, now=now)
    if replay is not None:
        return Refused(replay)
    return Accepted(body)


def _tun_bytes(device: str) -> tuple[int, int]:
    """Bytes through the tun device itself: OpenVPN's own byte counts include its keepalive
    pings, which would keep an unused admin tunnel open for ever."""
    base = Path("/sys/class/net") / device / "statistics"
    try:
        return int((base / "rx_bytes").read_text()), int((base / "tx_bytes").read_text())
    except (OSError, ValueError):
        return (0, 0)


class TokenBucket:
    """Datagrams per second the GateWatcher will verify; the rest are dropped unread."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._tokens, self._at = burst, clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


@dataclass
class Counters:
    accepted: int = 0
    refused: int = 0
    dropped_oversize: int = 0
    dropped_rate: int = 0


class GateWatcher:
    def __init__(self, cfg: GatewayConfig, store: Store, supervisor: Supervisor, *, root: x509.Certificate,
                 crl: x509.CertificateRevocationList, on_event: Callable[[dict[str, object]], None] | None = None,
                 bind: str | None = None) -> None:
        if cfg.admin is None:
            raise PkiError("no [admin] in the config: the GateWatcher has no destination to open")
        self.cfg, self.store, self.supervisor = cfg, store, supervisor
        self.root, self.crl = root, crl
        self.counters = Counters()
        self._on_event = on_event or (lambda event: None)
        self._bucket = TokenBucket(rate=cfg.wakeup.rate_per_s * 2, burst=cfg.wakeup.rate_per_s * 2)
        address = bind if bind is not None else (str(cfg.interfaces.wan.address.ip) if cfg.interfaces.wan.address
                                                 else "0.0.0.0")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, cfg.wakeup.port))
        self.sock.setblocking(False)
        self._opened_at: float | None = None
        self._last_traffic: tuple[float, int, int] | None = None
        #: the idle clock starts again when the tunnel connects: a slow handshake (a busy
        #: board, the token slow to sign) is not idleness, and must not close the tunnel
        #: before the GWA could use it; one that never connects still goes after the idle timeout
        self._connected_seen = False

    def close(self) -> None:
        self.sock.close()

    def _event(self, kind: str, **fields: object) -> None:
        event = {"event": kind, **fields}
        log.info("gatewatcher: %s", event)
        self._on_event(event)

    def poll(self, timeout: float = 0.1) -> None:
        """Handle the datagrams waiting now, then the admin tunnel's timeouts. With no admin
        tunnel there is nothing to time: it waits up to ``timeout`` for the first datagram."""
        idle = self.supervisor.idle()
        if idle:
            select.select([self.sock], [], [], timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                datagram, source = self.sock.recvfrom(MAX_DATAGRAM + 1)
            except BlockingIOError:
                break
            if len(datagram) > MAX_DATAGRAM:
                self.counters.dropped_oversize += 1
                self._event("refused", reason=f"datagram over {MAX_DATAGRAM} bytes", source=source[0])
                continue
            if not self._bucket.take():
                self.counters.dropped_rate += 1  # not logged one by one: that would be the flood's lever
                continue
            self.handle(datagram, source[0])
            if time.monotonic() > deadline:
                break
        if not idle:
            self.supervisor.poll(min(timeout, 0.05))
        self._timeouts()

    def handle(self, datagram: bytes, source: str) -> None:
        decision = judge(datagram, gateway_id=self.cfg.gateway.id, root=self.root, crl=self.crl,
                         now=dt.datetime.now(dt.UTC), window_s=self.cfg.wakeup.window_s, store=self.store)
        if isinstance(decision, Refused):
            self.counters.refused += 1
            self._event("refused", reason=decision.reason, source=source)
            return
        self.counters.accepted += 1
        body = decision.body
        self._event("accepted", action=body.action, sequence=body.sequence, source=source)
        if body.action == "wakeup":
            if self.supervisor.running(ADMIN):
                self._event("admin-tunnel", state="already up")
                return
            self.supervisor.start([ADMIN])
            self._opened_at = time.monotonic()
            self._last_traffic = None
            self._connected_seen = False
            assert self.cfg.admin is not None
            self._event("admin-tunnel", state="opening", to=f"{self.cfg.admin.remote.address}:"
                                                           f"{self.cfg.admin.remote.port}")
        else:
            self._close_admin("breakup")

    def _close_admin(self, why: str) -> None:
        if self.supervisor.running(ADMIN):
            self.supervisor.stop([ADMIN])
            self._event("admin-tunnel", state="closed", why=why)
        self._opened_at = None

    def _timeouts(self) -> None:
        if self._opened_at is None or self.cfg.admin is None:
            return
        now = time.monotonic()
        if now - self._opened_at > self.cfg.admin.max_lifetime_s:
            self._close_admin("maximum lifetime")
            return
        if not self._connected_seen and any(s.name == ADMIN and s.state == "CONNECTED"
                                            for s in self.supervisor.status()):
            self._connected_seen = True
            self._last_traffic = None
        traffic = _tun_bytes(tunnel_device(ADMIN))
        if self._last_traffic is None or traffic != self._last_traffic[1:]:
            self._last_traffic = (now, *traffic)
        elif now - self._last_traffic[0] > self.cfg.admin.idle_timeout_s:
            self._close_admin("idle timeout")
