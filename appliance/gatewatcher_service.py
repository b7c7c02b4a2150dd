"""The GateWatcher as a service loop: WakeUp/BreakUp on the wake-up port, the admin tunnel
and, while it is up, the admin API on its address; every decision in the system log. Runs
as ``smgw gatewatcher run`` or as a thread of ``smgw gateway run --in-process``; ``emit``
gets one document per decision."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from appliance.admin_runner import AdminApiRunner
from appliance.audit import Auditor
from appliance.backoff import doubling
from appliance.config import GatewayConfig
from appliance.errors import SmgwError
from appliance.gatewatcher import ADMIN, GateWatcher
from appliance.rendered import supervised
from appliance.store import Store
from appliance.tunnels import Supervisor
from pki.encoding import read_certificate, read_crl
from pki.token import read_pin

Emit = Callable[[dict[str, object]], None]


class ApiRetry:
    """When the admin API does not come up with its tunnel (stunnel slow to listen on a loaded
    board, the token busy with another process's session), or its stunnel dies later, it is
    tried again while the tunnel stays up: 2, 4, 8 … up to 30 s apart. Without this one
    refusal left the GWA with a connected tunnel and nothing listening in it until the next
    WakeUp."""

    def __init__(self, first_s: float = 2.0, max_s: float = 30.0) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.reset()

    def reset(self) -> None:
        self.failures = 0
        self.next_at: float | None = None

    def attempted(self, ok: bool, now: float | None = None) -> None:
        if ok:
            self.reset()
            return
        self.failures += 1
        self.next_at = (time.monotonic() if now is None else now) + doubling(self.failures, self.first_s, self.max_s)

    @property
    def pending(self) -> bool:
        return self.next_at is not None

    def due(self, now: float | None = None) -> bool:
        return self.next_at is not None and (time.monotonic() if now is None else now) >= self.next_at


def run_gatewatcher(cfg: GatewayConfig, stop: threading.Event, *, seconds: float | None = None,
                    emit: Emit = lambda doc: None) -> None:
    if cfg.admin is None:
        raise SmgwError("no [admin] section: nothing to wake up to")
    supervisor = Supervisor(supervised(cfg, [ADMIN]), read_pin(cfg.token.pin_file), log_dir=cfg.paths.state)
    deadline = None if seconds is None else time.monotonic() + seconds
    with Store.open(cfg.store.path) as store:
        auditor = Auditor.for_config(store, cfg)

        def decided(event: dict[str, object]) -> None:
            emit(event)  # and every decision into the system log (refusal floods summarised)
            kind = str(event.get("event", "event"))
            auditor.record("system", f"gatewatcher.{kind}", {k: v for k, v in event.items() if k != "event"})

        watcher = GateWatcher(cfg, store, supervisor, root=read_certificate(cfg.pki.root),
                              crl=read_crl(cfg.pki.crl), on_event=decided)
        decided({"event": "listening", "port": cfg.wakeup.port})
        api = AdminApiRunner(cfg, store, decided)
        last: tuple[str, str] = ("", "")
        retry = ApiRetry()
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                # no admin tunnel: a datagram wakes it, nothing else is due (20 turns a second
                # cost the core most of its CPU while nothing happened)
                watcher.poll(1.0 if supervisor.idle() and not api.up else 0.05)
                api.drain()
                status = next(s for s in supervisor.status() if s.name == ADMIN)
                now = (status.state, status.local_ip if status.state == "CONNECTED" else "")
                if now != last:
                    if now[0] != last[0]:
                        decided({"event": "admin-state", "state": status.state})
                    last = now
                    retry.reset()
                    api.stop()
                    if now[0] == "CONNECTED" and now[1]:
                        retry.attempted(api.start(now[1]))
                elif now[0] == "CONNECTED" and now[1] and not api.up:
                    if not retry.pending:  # it served, and its stunnel has died since: down, then again
                        api.stop()
                        retry.attempted(False)
                    elif retry.due():
                        retry.attempted(api.start(now[1]))
        finally:
            api.stop()
            supervisor.stop()
            watcher.close()
            decided({"event": "stopped", **watcher.counters.__dict__})
            auditor.flush()
