"""The tunnel supervisor as a service loop: the parties' tunnels, their states published to
``<paths.run>/tunnels/<party>.json`` (what ``smgw status``, the sender and the portal read)
and the system log.

Runs as ``smgw tunnels run --party P`` (one unit per party: ``smgw-tunnel-<party>.service``),
as ``smgw tunnels run`` for all of them (a child of ``smgw gateway run``) or as a thread of
``smgw gateway run --in-process``; ``emit`` gets one document per state change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from appliance.audit import Auditor
from appliance.config import GatewayConfig
from appliance.rendered import supervised
from appliance.store import Store
from appliance.tunnel_states import write_states
from appliance.tunnels import Supervisor, TunnelStatus
from pki.token import read_pin

#: tunnel states worth a system-log row (the steps in between only in the service log)
AUDITED_STATES = frozenset({"STARTING", "CONNECTED", "RECONNECTING", "RESTARTING", "EXITING", "STOPPED"})
Emit = Callable[[dict[str, object]], None]


def status_doc(supervisor: Supervisor, status: TunnelStatus) -> dict[str, object]:
    doc = asdict(status)
    doc.update(pid=supervisor.pid(status.name), connect_seconds=status.connect_seconds())
    return doc


def write_status(supervisor: Supervisor, run: Path) -> None:
    write_states(run, [status_doc(supervisor, s) for s in supervisor.status()])


def run_tunnels(cfg: GatewayConfig, stop: threading.Event, *, seconds: float | None = None,
                emit: Emit = lambda doc: None, parties: list[str] | None = None) -> None:
    """Supervise the parties' tunnels (all, or only ``parties``) until ``stop`` (or ``seconds``)."""
    # the parties' tunnels only: the admin tunnel is the GateWatcher's, opened by a WakeUp
    names = [p.name for p in cfg.parties if parties is None or p.name in parties]
    supervisor = Supervisor(supervised(cfg, names), read_pin(cfg.token.pin_file), log_dir=cfg.paths.state)
    deadline = None if seconds is None else time.monotonic() + seconds
    store = Store.open(cfg.store.path)
    auditor = Auditor.for_config(store, cfg)
    supervisor.start()
    last: dict[str, tuple[str, int]] = {}
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            supervisor.poll(1.0)  # woken by any management message; its own timers shorten the wait
            changed = False
            for status in supervisor.status():
                key = (status.state, status.restarts)
                if last.get(status.name) != key:
                    last[status.name] = key
                    changed = True
                    doc = status_doc(supervisor, status)
                    emit(doc)
                    if status.state in AUDITED_STATES:
                        auditor.record("system", "tunnel.state", doc)
            if changed:
                write_status(supervisor, cfg.paths.run)
            auditor.flush()
    finally:
        supervisor.stop()
        write_status(supervisor, cfg.paths.run)
        auditor.record("system", "tunnel.state", {"name": ",".join(names) or "*", "state": "STOPPED"})
        store.close()
