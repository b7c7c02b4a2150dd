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
from appliance.config import GatewayConfig
from appliance.errors import SmgwError
from appliance.gatewatcher import ADMIN, GateWatcher
from appliance.rendered import supervised
from appliance.store import Store
from appliance.tunnels import Supervisor
from pki.encoding import read_certificate, read_crl
from pki.token import read_pin

Emit = Callable[[dict[str, object]], None]


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
        last_state = ""
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                watcher.poll(0.05)
                api.drain()
                status = next(s for s in supervisor.status() if s.name == ADMIN)
                if status.state != last_state:
                    last_state = status.state
                    decided({"event": "admin-state", "state": status.state})
                    if status.state == "CONNECTED" and status.local_ip:
                        api.start(status.local_ip)
                    else:
                        api.stop()
        finally:
            api.stop()
            supervisor.stop()
            watcher.close()
            decided({"event": "stopped", **watcher.counters.__dict__})
            auditor.flush()
