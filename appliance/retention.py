"""Retention: forget what the gateway may no longer keep, and say so in the system log.

Expired readings, acknowledged deliveries (per access profile) and audit-log rows (per log,
behind a checkpoint that keeps the chain verifiable) are deleted with ``secure_delete`` on,
so SQLite overwrites their bytes with zeros; then the WAL is checkpointed and truncated so
no old frame keeps a copy. The system-log row names how many rows of which period went,
never a value.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from appliance.audit import Auditor
from appliance.audit_chain import LOGS
from appliance.config import GatewayConfig
from appliance.store import Store

DAY = dt.timedelta(days=1)


@dataclass(slots=True)
class RetentionReport:
    readings: dict[str, object] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=dict)
    log_rows: dict[str, int] = field(default_factory=dict)
    wal_truncated: bool = False

    def deleted_anything(self) -> bool:
        return bool(self.readings.get("readouts") or self.readings.get("intervals")
                    or self.readings.get("logbook_events") or any(self.deliveries.values())
                    or any(self.log_rows.values()))


def log_days(cfg: GatewayConfig, log: str) -> float:
    return float(getattr(cfg.retention, f"{log}_log_days"))


def apply_retention(store: Store, cfg: GatewayConfig, auditor: Auditor, now: dt.datetime) -> RetentionReport:
    report = RetentionReport()
    report.readings = store.prune_readings(now - cfg.retention.readings_days * DAY)
    days = {p.name: p.retention_days for p in cfg.profiles}
    for profile in store.outbox_profiles():
        # a profile no longer configured keeps its deliveries as long as readings are kept
        keep = days.get(profile, cfg.retention.readings_days)
        report.deliveries[profile] = store.prune_outbox(profile, now - keep * DAY)
    auditor.flush()
    with auditor.macs() as mac:
        for log in LOGS:
            report.log_rows[log] = store.audit_prune(log, now - log_days(cfg, log) * DAY, now, mac)
    if report.deleted_anything():
        auditor.record("system", "retention.deleted", {
            "readings": report.readings, "deliveries": {k: v for k, v in report.deliveries.items() if v},
            "log_rows": {k: v for k, v in report.log_rows.items() if v}}, at=now)
    report.wal_truncated = store.truncate_wal()
    return report
