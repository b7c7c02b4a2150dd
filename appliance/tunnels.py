"""The tunnel supervisor: one openvpn process per tunnel, driven over its management socket.

It starts each process (held until we connect), gives the token PIN when OpenVPN asks for
it, follows the state (CONNECTING .. CONNECTED), and restarts a process that died or hit a
fatal error, with exponential backoff and jitter. Every transition is logged; ``status()``
is what ``smgw status --json`` shows. The protocol itself lives in ``ovpn_mgmt``.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.child import dying_with_parent
from appliance.errors import SmgwError
from appliance.ovpn_mgmt import (
    ByteCount,
    Fatal,
    Hold,
    ManagementClient,
    ManagementError,
    NeedOk,
    PasswordFailed,
    PasswordNeeded,
    State,
    quote,
)

log = logging.getLogger("smgw.tunnels")
SOFT_RESTARTS = 3  #: failed soft restarts in a row before the process is replaced


@dataclass
class TunnelStatus:
    name: str
    state: str = "STOPPED"
    detail: str = ""
    local_ip: str = ""
    restarts: int = 0
    started_at: float = 0.0
    connected_at: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    last_error: str = ""

    def connect_seconds(self) -> float | None:
        return None if self.connected_at is None else self.connected_at - self.started_at


@dataclass
class _Tunnel:
    name: str
    config: Path
    socket_path: Path
    status: TunnelStatus
    process: subprocess.Popen[bytes] | None = None
    sock: socket.socket | None = None
    client: ManagementClient = field(default_factory=ManagementClient)
    failures: int = 0
    holds: int = 0  #: holds and token requests since this process started or last connected
    restart_at: float | None = None
    pin_refused: bool = False


class Supervisor:
    def __init__(self, tunnels: dict[str, tuple[Path, Path]], pin: str, *, openvpn: str = "openvpn",
                 rng: random.Random | None = None, max_backoff: float = 30.0, log_dir: Path | None = None) -> None:
        """``tunnels`` maps a name to (config file, management socket path)."""
        try:
            quote(pin)
        except ManagementError:
            raise SmgwError("token PIN holds a control character; it cannot be sent to OpenVPN") from None
        self._pin = pin
        self._openvpn = openvpn
        self._rng = rng or random.Random()
        self._max_backoff = max_backoff
        self._log_dir = log_dir
        self._selector = selectors.DefaultSelector()
        self._tunnels = {name: _Tunnel(name, conf, sock, TunnelStatus(name)) for name, (conf, sock) in tunnels.items()}

    # ------------------------------------------------------------------ control
    def start(self, names: list[str] | None = None) -> None:
        for tunnel in self._select(names):
            self._spawn(tunnel)

    def running(self, name: str) -> bool:
        tunnel = self._tunnels[name]
        return tunnel.process is not None or tunnel.restart_at is not None

    def idle(self) -> bool:
        """No tunnel running or due to restart: nothing for ``poll`` to do until one is started."""
        return all(t.process is None and t.restart_at is None for t in self._tunnels.values())

    def _wait_limit(self, timeout: float) -> float:
        """How long a poll may wait for a management message: a socket still to be connected
        is tried every 50 ms, and a restart waits no longer than until it falls due. Anything
        else (a message, openvpn exiting and so closing its socket) wakes the poll itself."""
        now = time.monotonic()
        for tunnel in self._tunnels.values():
            if tunnel.process is not None and tunnel.sock is None:
                timeout = min(timeout, 0.05)
            if tunnel.restart_at is not None:
                timeout = min(timeout, max(0.0, tunnel.restart_at - now))
        return timeout

    def _select(self, names: list[str] | None) -> list[_Tunnel]:
        return list(self._tunnels.values()) if names is None else [self._tunnels[n] for n in names]

    def stop(self, names: list[str] | None = None) -> None:
        """SIGTERM to every selected openvpn at once, then wait for all (5 s in total), then SIGKILL."""
        chosen = self._select(names)
        for tunnel in chosen:
            tunnel.restart_at = None  # a stopped tunnel is not restarted
            self._close(tunnel)
            if tunnel.process is not None and tunnel.process.poll() is None:
                tunnel.process.terminate()
        deadline = time.monotonic() + 5
        for tunnel in chosen:
            if tunnel.process is not None:
                try:
                    tunnel.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    tunnel.process.kill()
                    tunnel.process.wait()
            tunnel.process = None
            tunnel.failures = 0
            tunnel.status.connected_at = None
            self._set_state(tunnel, "STOPPED", "")

    def status(self) -> list[TunnelStatus]:
        return [t.status for t in self._tunnels.values()]

    def pid(self, name: str) -> int | None:
        process = self._tunnels[name].process
        return None if process is None else process.pid

    # ------------------------------------------------------------------ loop
    def poll(self, timeout: float = 0.2) -> None:
        """One turn: read management sockets, reap dead processes, restart when due. It waits
        up to ``timeout`` for a message, less when a timer of its own falls due sooner."""
        now = time.monotonic()
        for tunnel in self._tunnels.values():
            if tunnel.process is not None and tunnel.process.poll() is not None:
                self._died(tunnel, f"openvpn exited with {tunnel.process.returncode}")
            elif tunnel.process is not None and tunnel.sock is None:
                self._try_connect(tunnel)
            if tunnel.process is None and tunnel.restart_at is not None and now >= tunnel.restart_at:
                self._spawn(tunnel)
        timeout = self._wait_limit(timeout)
        if not self._selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self._selector.select(timeout):
            tunnel = key.data
            try:
                data = tunnel.sock.recv(65536) if tunnel.sock is not None else b""
            except OSError:
                data = b""
            if not data:
                self._close(tunnel)
                continue
            try:
                events = tunnel.client.receive_data(data)
            except ManagementError as exc:
                log.warning("tunnel %s: %s", tunnel.name, exc)
                continue
            for event in events:
                self._handle(tunnel, event)

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.poll(0.05)
        return predicate()

    # ------------------------------------------------------------------ internals
    def _spawn(self, tunnel: _Tunnel) -> None:
        tunnel.socket_path.unlink(missing_ok=True)
        tunnel.socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tunnel.client = ManagementClient()
        tunnel.restart_at = None
        tunnel.holds = 0
        tunnel.status.started_at = time.monotonic()
        tunnel.status.connected_at = None
        argv = [self._openvpn, "--config", str(tunnel.config)]
        if self._log_dir is not None:
            argv += ["--log-append", str(self._log_dir / f"openvpn-{tunnel.name}.log")]
        tunnel.process = subprocess.Popen(dying_with_parent(argv), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._set_state(tunnel, "STARTING", "")
        self._try_connect(tunnel)

    def _try_connect(self, tunnel: _Tunnel) -> None:
        if not tunnel.socket_path.exists():
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(tunnel.socket_path))
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        tunnel.sock = sock
        self._selector.register(sock, selectors.EVENT_READ, tunnel)
        sock.sendall(tunnel.client.start())

    def _close(self, tunnel: _Tunnel) -> None:
        if tunnel.sock is not None:
            self._selector.unregister(tunnel.sock)
            tunnel.sock.close()
            tunnel.sock = None

    def _died(self, tunnel: _Tunnel, why: str) -> None:
        self._close(tunnel)
        tunnel.process = None
        tunnel.failures += 1
        tunnel.status.restarts += 1
        tunnel.status.last_error = why
        delay = 0.0 if tunnel.failures == 1 else min(self._max_backoff, 0.5 * 2 ** (tunnel.failures - 2))
        delay *= 0.5 + self._rng.random() / 2
        tunnel.restart_at = time.monotonic() + delay
        self._set_state(tunnel, "RESTARTING", why)
        log.warning("tunnel %s: %s; restart %d in %.2f s", tunnel.name, why, tunnel.status.restarts, delay)

    def _handle(self, tunnel: _Tunnel, event: object) -> None:
        if isinstance(event, State):
            if event.name == "CONNECTED":
                tunnel.status.connected_at = time.monotonic()
                tunnel.failures = tunnel.holds = 0
            tunnel.status.local_ip = event.local_ip
            self._set_state(tunnel, event.name, event.detail)
        elif isinstance(event, Hold):
            # management-hold holds again after every soft restart (a TLS error, a ping
            # timeout): release it, or the tunnel stays down for good. But a soft restart keeps
            # pkcs11-helper's token session, and one that went bad (two processes logging in to
            # SoftHSM2 at once) fails every handshake after it: after a few in a row, start a
            # fresh process instead (poll() sees it exit and restarts it with backoff).
            tunnel.holds += 1
            if tunnel.holds > 1 + SOFT_RESTARTS and tunnel.process is not None:
                log.warning("tunnel %s: %d soft restarts without a connection; starting a fresh openvpn",
                            tunnel.name, tunnel.holds - 1)
                tunnel.process.terminate()
                return
            assert tunnel.sock is not None
            tunnel.sock.sendall(b"hold release\n")
        elif isinstance(event, NeedOk):
            assert tunnel.sock is not None
            if event.kind == "token-insertion-request":  # the token is built in: it is there
                # ... unless pkcs11-helper keeps not finding it (SoftHSM2 read its files while
                # another process wrote them): answering for ever would spin; a fresh process
                # (with backoff) rescans the token
                tunnel.holds += 1
                if tunnel.holds > 1 + SOFT_RESTARTS and tunnel.process is not None:
                    log.warning("tunnel %s: the token is not found; starting a fresh openvpn", tunnel.name)
                    tunnel.process.terminate()
                    return
                tunnel.sock.sendall(tunnel.client.need_ok(event.kind))
            else:
                log.error("tunnel %s: OpenVPN asks to confirm %r; not answered", tunnel.name, event.kind)
        elif isinstance(event, PasswordNeeded):
            if tunnel.pin_refused:
                log.error("tunnel %s: token PIN refused before; not retrying it", tunnel.name)
                return
            assert tunnel.sock is not None
            tunnel.sock.sendall(tunnel.client.password(event.kind, self._pin))
        elif isinstance(event, PasswordFailed):
            tunnel.pin_refused = True
            tunnel.status.last_error = "token PIN refused"
            log.error("tunnel %s: token PIN refused", tunnel.name)
        elif isinstance(event, Fatal):
            tunnel.status.last_error = event.text
            log.error("tunnel %s: fatal: %s", tunnel.name, event.text)
        elif isinstance(event, ByteCount):
            tunnel.status.bytes_in, tunnel.status.bytes_out = event.received, event.sent

    def _set_state(self, tunnel: _Tunnel, state: str, detail: str) -> None:
        if (state, detail) != (tunnel.status.state, tunnel.status.detail):
            log.info("tunnel %s: %s %s", tunnel.name, state, detail)
        tunnel.status.state, tunnel.status.detail = state, detail
