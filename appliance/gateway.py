"""The core service's reader loop: poll the meter, store each readout, survive failures.

A failing meter never ends the process: the failure is logged and the next attempt waits
with exponential backoff (capped), so a dead meter is not hammered and a recovered one is
read again soon. Storage is one transaction per readout (``Store.save_readout``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.audit import Auditor
from appliance.audit_chain import LogName
from appliance.config import GatewayConfig, MeterConfig
from appliance.errors import SmgwError
from appliance.profiles import describe
from appliance.retention import apply_retention
from appliance.selftest import Check, blocking, read_results, run_checks, write_results
from appliance.store import Store, StoreError
from pki.errors import PkiError
from reader.errors import ProtocolError, ReaderError
from reader.models import Readout
from reader.protocol import SessionOptions
from reader.transport import read_meter

log = logging.getLogger("smgw.gateway")
MAX_BACKOFF = 300.0


def session_options(meter: MeterConfig) -> SessionOptions:
    """Map the config model to the reader's options (the reader knows nothing of config)."""
    password = "00000000"
    if meter.password_file is not None:
        try:
            password = meter.password_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SmgwError(f"meter.password_file {meter.password_file}: cannot read ({exc})") from None
    return SessionOptions(
        mode=meter.mode,
        address=meter.address,
        max_baud=meter.baud,
        attempts=meter.attempts,
        echo=meter.echo,
        password=password,
        load_profile=meter.load_profile,
        logbook=meter.logbook,
        zone=meter.timezone,
    )


def backoff_delay(failures: int, poll_interval: float, rng: random.Random) -> float:
    """Wait after the n-th consecutive failure: doubling from a few seconds, jittered, capped."""
    base = min(5.0, poll_interval)
    delay = min(base * 2.0 ** (failures - 1), max(MAX_BACKOFF, poll_interval))
    return delay * (0.75 + rng.random() * 0.5)


@dataclass(slots=True)
class LoopStats:
    readouts: int = 0
    failures: int = 0
    consecutive_failures: int = 0


def _failed(stats: LoopStats, poll_interval: float, rng: random.Random) -> float:
    stats.failures += 1
    stats.consecutive_failures += 1
    return backoff_delay(stats.consecutive_failures, poll_interval, rng)


def store_readout(store: Store, meter: MeterConfig, readout: Readout) -> int:
    meter_id = meter.id or readout.meter_id()
    return store.save_readout(
        meter_id=meter_id, readout=readout, read_at=datetime.now(UTC), integrity="ok"
    )


def run_reader_loop(
    config: GatewayConfig,
    stop: threading.Event,
    *,
    max_readouts: int | None = None,
    rng: random.Random | None = None,
    after_readout: Callable[[Store, str], None] | None = None,
) -> LoopStats:
    """Poll until ``stop`` is set (or ``max_readouts`` readouts are stored)."""
    rng = rng or random.Random()
    meter = config.meter
    options = session_options(meter)
    stats = LoopStats()
    store = Store.open(Path(config.store.path))
    log.info("reader loop: meter %s every %gs, store %s", meter.port, meter.poll_interval, config.store.path)
    try:
        auditor = Auditor.for_config(store, config, create_key=True)
        record_start(auditor, store, config)
        consumers_told: set[str] = set()
        next_retention = next_selftest = 0.0
        gate = SendGate()
        while not stop.is_set():
            started = time.monotonic()
            try:
                readout = read_meter(meter.port, options, timeout=meter.timeout, framing=meter.framing)
                readout_id = store_readout(store, meter, readout)
            except (ReaderError, StoreError, SmgwError) as exc:
                wait = _failed(stats, meter.poll_interval, rng)
                log.warning("readout failed (%s: %s); retry in %.1fs", type(exc).__name__, exc, wait)
                if isinstance(exc, ProtocolError):  # a telegram that failed its checks
                    auditor.record("calibration", "integrity.failed", {"error": type(exc).__name__,
                                                                        "message": str(exc)[:300]},
                                   consumer=meter.id)
                else:
                    auditor.record("system", "readout.failed", {"error": type(exc).__name__,
                                                                 "message": str(exc)[:300]})
                stop.wait(wait)
                continue
            except Exception:  # a bug must not end an unattended gateway: log it, back off
                wait = _failed(stats, meter.poll_interval, rng)
                log.exception("readout failed unexpectedly; retry in %.1fs", wait)
                auditor.record("system", "readout.failed", {"error": "unexpected (see the service log)"})
                stop.wait(wait)
                continue
            stats.readouts += 1
            stats.consecutive_failures = 0
            meter_id = meter.id or readout.meter_id()
            for note in readout.notes:
                log.info("readout %d: %s", readout_id, note)
                if note.startswith(("attempt ", "NAK")):  # the meter had to send again
                    auditor.record("calibration", "integrity.retried", {"readout": readout_id, "note": note},
                                   consumer=meter_id)
            log.info(
                "readout %d stored: %d readings from %s (attempts %d)",
                readout_id, len(readout.readings), readout.identification.text, readout.attempts,
            )
            if meter_id not in consumers_told:
                record_profiles(auditor, store, config, meter_id)
                consumers_told.add(meter_id)
            if time.monotonic() >= next_selftest:
                next_selftest = time.monotonic() + config.selftest.interval_s
                self_test(config, store, auditor)
            if after_readout is not None and gate.open(config, auditor):
                try:  # processing and sending must never stop the reader
                    after_readout(store, meter_id)
                except Exception:
                    log.exception("processing after readout %d failed", readout_id)
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + config.retention.interval_s
                _retention(store, config, auditor)
            auditor.flush()
            if max_readouts is not None and stats.readouts >= max_readouts:
                break
            stop.wait(max(0.0, meter.poll_interval - (time.monotonic() - started)))
        auditor.record("system", "core.stopped", {"readouts": stats.readouts, "failures": stats.failures})
    finally:
        store.close()
    return stats


def _retention(store: Store, config: GatewayConfig, auditor: Auditor) -> None:
    try:
        report = apply_retention(store, config, auditor, datetime.now(UTC))
    except (StoreError, PkiError) as exc:
        log.warning("retention failed (%s); next try in %gs", exc, config.retention.interval_s)
        auditor.record("system", "retention.failed", {"message": str(exc)[:300]})
        return
    if report.deleted_anything():
        log.info("retention: deleted %s, %s deliveries, log rows %s", report.readings,
                 sum(report.deliveries.values()), report.log_rows)
    if not report.wal_truncated:
        log.warning("retention: the WAL could not be truncated now (a reader holds it); next time")


def self_test(config: GatewayConfig, store: Store, auditor: Auditor) -> list[Check]:
    """Run the checks this process may run, publish them, and log each change of outcome."""
    before = read_results(config)
    checks = run_checks(config, store)
    write_results(config, checks)
    for check in checks:
        old = before.get(check.name)
        if old is None or old.ok != check.ok:
            auditor.record("system", "selftest.passed" if check.ok else "selftest.failed",
                           {"check": check.name, "critical": check.critical, "detail": check.detail})
            if not check.ok:
                log.error("self-test %s failed: %s", check.name, check.detail)
    return checks


@dataclass(slots=True)
class SendGate:
    """Processing and sending stop while a critical self-test fails, and say so once."""

    blocked: tuple[str, ...] = ()

    def open(self, config: GatewayConfig, auditor: Auditor) -> bool:
        failed = blocking(read_results(config))
        names = tuple(sorted(c.name for c in failed))
        if names != self.blocked:
            if names:
                log.error("sending stopped: self-test %s failed", ", ".join(names))
                auditor.record("system", "sending.stopped", {"failed": {c.name: c.detail for c in failed}})
            else:
                log.info("sending resumed: the self-tests pass again")
                auditor.record("system", "sending.resumed", {})
            self.blocked = names
        return not names


def config_digest(config: GatewayConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()


def record_start(auditor: Auditor, store: Store, config: GatewayConfig) -> None:
    """``core.started`` with the config's digest, and ``config.changed`` when it differs
    from the one the last start recorded: the GWA sees every configuration change."""
    digest = config_digest(config)
    previous = last_detail(store, "system", "core.started")
    if previous is not None and previous.get("config_sha256") != digest:
        auditor.record("system", "config.changed", {"from": previous.get("config_sha256"), "to": digest})
    auditor.record("system", "core.started", {"config_sha256": digest, "gateway": config.gateway.id,
                                              "profiles": [p.name for p in config.profiles],
                                              "parties": [p.name for p in config.parties]})


def record_profiles(auditor: Auditor, store: Store, config: GatewayConfig, meter_id: str) -> None:
    """Tell the consumer which access profiles apply to their data, whenever that changes."""
    active = {p.name: describe(p) for p in config.profiles}
    previous = last_detail(store, "consumer", "profiles.active", consumer=meter_id)
    if previous is None or previous.get("profiles") != active:
        auditor.record("consumer", "profiles.active", {"profiles": active}, consumer=meter_id)


def last_detail(store: Store, log_name: LogName, event: str, consumer: str | None = None) -> dict[str, object] | None:
    row = store.audit_last(log_name, event, consumer)
    doc = json.loads(row.detail) if row is not None else None
    return doc if isinstance(doc, dict) else None
