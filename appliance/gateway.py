"""The core service's reader loop: poll the meter, store each readout, survive failures.

A failing meter never ends the process: the failure is logged and the next attempt waits
with exponential backoff (capped), so a dead meter is not hammered and a recovered one is
read again soon. Storage is one transaction per readout (``Store.save_readout``).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance.audit import Auditor
from appliance.audit_chain import LogName
from appliance.backoff import doubling, jittered
from appliance.config import INSTALLED_DIR, GatewayConfig, MeterConfig
from appliance.config_snapshot import digest as snapshot_digest
from appliance.errors import ConfigError, SmgwError
from appliance.parts import PartSupervisor, ThreadParts
from appliance.profiles import describe
from appliance.retention import apply_retention
from appliance.selftest import Check, blocking, read_results, run_checks, write_results
from appliance.store import DuplicateReadoutError, Store, StoreError
from appliance.timecheck import FLAG as CLOCK_FLAG
from appliance.timecheck import ClockReading, check_clock
from pki.errors import PkiError
from reader.errors import ProtocolError, ReaderError
from reader.models import Readout
from reader.protocol import SessionOptions
from reader.transport import read_meter

log = logging.getLogger("smgw.gateway")
MAX_BACKOFF = 300.0
SELFTEST_RETRY_S = 30.0  #: how soon failed self-tests run again


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
    return jittered(doubling(failures, min(5.0, poll_interval), max(MAX_BACKOFF, poll_interval)), rng, 0.75, 1.25)


@dataclass(slots=True)
class LoopStats:
    readouts: int = 0
    failures: int = 0
    consecutive_failures: int = 0


def _failed(stats: LoopStats, poll_interval: float, rng: random.Random) -> float:
    stats.failures += 1
    stats.consecutive_failures += 1
    return backoff_delay(stats.consecutive_failures, poll_interval, rng)


#: readouts read but not yet stored (disk full, database locked): kept in memory up to this
#: many, then the oldest go, counted and logged; at a 30 s poll this is over 8 hours
MAX_WAITING = 1000


@dataclass(slots=True)
class Waiting:
    """Readouts that could not be stored yet, oldest first; each keeps the time it was read."""

    items: deque[tuple[str, Readout, datetime, str]] = field(default_factory=deque)
    dropped: int = 0
    failing_since: datetime | None = None

    def add(self, meter_id: str, readout: Readout, read_at: datetime, integrity: str = "ok") -> None:
        if len(self.items) >= MAX_WAITING:
            self.items.popleft()
            self.dropped += 1
            log.error("store unavailable: %d readouts waiting; the oldest dropped (%d so far)",
                      len(self.items), self.dropped)
        self.items.append((meter_id, readout, read_at, integrity))

    def store(self, store: Store, auditor: Auditor) -> list[tuple[int, str, Readout]]:
        """Store what waits, in order; stop at the first failure (it waits for the next try)."""
        stored = []
        while self.items:
            meter_id, readout, read_at, integrity = self.items[0]
            try:
                stored.append((store.save_readout(meter_id=meter_id, readout=readout, read_at=read_at,
                                                  integrity=integrity), meter_id, readout))
            except DuplicateReadoutError:
                pass  # stored before a crash of the previous attempt's commit acknowledgement
            except StoreError as exc:
                if self.failing_since is None:
                    self.failing_since = read_at
                    log.error("cannot store readouts (%s): keeping up to %d in memory", exc, MAX_WAITING)
                    auditor.record("system", "store.failing", {"message": str(exc)[:300]})
                return stored
            self.items.popleft()
        if self.failing_since is not None:
            log.warning("store works again: %d readouts held since %s are stored", len(stored),
                        self.failing_since.isoformat())
            auditor.record("system", "store.recovered", {"since": self.failing_since.isoformat(),
                                                         "stored": len(stored), "dropped": self.dropped})
            self.failing_since, self.dropped = None, 0
        return stored


@dataclass(slots=True)
class CoreLoop:
    """One pass per poll: read, store (or hold), then the work that follows a stored readout,
    then housekeeping (self-tests, retention) whether or not the meter answered."""

    config: GatewayConfig
    store: Store
    auditor: Auditor
    after_readout: Callable[[Store, str], None] | None
    rng: random.Random
    stats: LoopStats = field(default_factory=LoopStats)
    waiting: Waiting = field(default_factory=Waiting)
    gate: SendGate = field(default_factory=lambda: SendGate())
    consumers_told: set[str] = field(default_factory=set)
    next_retention: float = 0.0
    next_selftest: float = 0.0
    next_clock: float = 0.0
    clock: ClockReading | None = None
    checks: list[Check] = field(default_factory=list)
    rendering: Callable[[GatewayConfig], list[Check]] | None = None  #: the rendering checks, when this core may have them run

    def check_time(self) -> None:
        """Ask the time source when due; log each change of the clock's state."""
        server = self.config.time.ntp_server
        if server is None or time.monotonic() < self.next_clock:
            return
        self.next_clock = time.monotonic() + self.config.time.check_interval_s
        reading = check_clock(str(server), self.config.time.max_deviation_s)
        previous = self.clock.state if self.clock is not None else None
        self.clock = reading
        if reading.state == previous:
            return
        detail = {"server": str(server), "offset_s": reading.offset_s, "detail": reading.detail}
        if reading.state == "deviating":
            log.error("time: %s; readouts are flagged %s until it is back", reading.detail, CLOCK_FLAG)
            self.auditor.record("calibration", "time.deviation", detail, consumer=self.config.meter.id)
        elif reading.state == "ok" and previous == "deviating":
            log.warning("time: back within the limit (%s)", reading.detail)
            self.auditor.record("calibration", "time.back", detail, consumer=self.config.meter.id)
        elif reading.state == "unreachable":
            log.warning("time: %s", reading.detail)
            self.auditor.record("system", "time.unreachable", detail)

    def read(self) -> float | None:
        """Read the meter once; returns the backoff to wait after a failure, else None."""
        meter = self.config.meter
        try:
            readout = read_meter(meter.port, session_options(meter), timeout=meter.timeout, framing=meter.framing)
        except ReaderError as exc:
            wait = _failed(self.stats, meter.poll_interval, self.rng)
            log.warning("readout failed (%s: %s); retry in %.1fs", type(exc).__name__, exc, wait)
            if isinstance(exc, ProtocolError):  # a telegram that failed its checks
                self.auditor.record("calibration", "integrity.failed",
                                    {"error": type(exc).__name__, "message": str(exc)[:300]}, consumer=meter.id)
            else:
                self.auditor.record("system", "readout.failed", {"error": type(exc).__name__,
                                                                  "message": str(exc)[:300]})
            return wait
        self.stats.readouts += 1
        self.stats.consecutive_failures = 0
        readout = within_retention(readout, datetime.now(UTC) - timedelta(days=self.config.retention.readings_days))
        deviating = self.clock is not None and self.clock.state == "deviating"
        self.waiting.add(meter.id or readout.meter_id(), readout, datetime.now(UTC),
                         CLOCK_FLAG if deviating else "ok")
        return None

    def stored(self) -> None:
        for readout_id, meter_id, readout in self.waiting.store(self.store, self.auditor):
            for note in readout.notes:
                log.info("readout %d: %s", readout_id, note)
                if note.startswith(("attempt ", "NAK")):  # the meter had to send again
                    self.auditor.record("calibration", "integrity.retried", {"readout": readout_id, "note": note},
                                        consumer=meter_id)
            log.info("readout %d stored: %d readings from %s (attempts %d)", readout_id, len(readout.readings),
                     readout.identification.text, readout.attempts)
            if readout.logbook:  # the meter's own events (P.98) go into the calibration log, once each
                for event in self.store.logbook_brought_by(readout_id):
                    self.auditor.record("calibration", "meter.event", {
                        "at": event.timestamp.isoformat(), "status": event.status, "values": list(event.values),
                        "readout": readout_id}, consumer=meter_id)
            if meter_id not in self.consumers_told:
                record_profiles(self.auditor, self.store, self.config, meter_id)
                self.consumers_told.add(meter_id)
        if self.after_readout is not None and not self.waiting.items and self.consumers_told \
                and self.gate.open(self.config, self.auditor, self.checks):
            for meter_id in sorted(self.consumers_told):
                try:  # processing and sending must never stop the reader
                    self.after_readout(self.store, meter_id)
                except Exception:
                    log.exception("processing for meter %s failed", meter_id)

    def self_test_if_due(self) -> None:
        """Before anything is processed: the first pass must not send on untested ground."""
        now = time.monotonic()
        if now >= self.next_selftest:
            self.next_selftest = now + SELFTEST_RETRY_S  # should the checks raise, not again at every pass
            self.checks = self_test(self.config, self.store, self.auditor, self.rendering)
            # sending is stopped while a critical check fails: look again soon, not in 15 min
            again = SELFTEST_RETRY_S if blocking({c.name: c for c in self.checks}) else self.config.selftest.interval_s
            self.next_selftest = now + min(again, self.config.selftest.interval_s)

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self.next_retention:
            self.next_retention = now + self.config.retention.interval_s
            _retention(self.store, self.config, self.auditor)
        self.auditor.flush()


def within_retention(readout: Readout, cutoff: datetime) -> Readout:
    """Drop the load-profile intervals and logbook events older than retention allows: the
    meter keeps its history, and storing it again would undo retention at every readout."""
    changes: dict[str, object] = {}
    if readout.load_profile:
        changes["load_profile"] = tuple(i for i in readout.load_profile if i.start >= cutoff)
    if readout.logbook:
        changes["logbook"] = tuple(e for e in readout.logbook if e.timestamp >= cutoff)
    return replace(readout, **changes) if changes else readout  # type: ignore[arg-type]


def run_reader_loop(
    config: GatewayConfig,
    stop: threading.Event,
    *,
    max_readouts: int | None = None,
    rng: random.Random | None = None,
    after_readout: Callable[[Store, str], None] | None = None,
    parts: PartSupervisor | ThreadParts | None = None,
    reload: Callable[[], tuple[GatewayConfig, Callable[[Store, str], None] | None]] | None = None,
    rendering: Callable[[GatewayConfig], list[Check]] | None = None,
) -> LoopStats:
    """Poll until ``stop`` is set (or ``max_readouts`` readouts are stored); with ``parts``,
    their restarts go into the system log on each pass. With ``reload``, access profiles the
    GWA installs or removes (``<paths.state>/profiles.d``) take effect at the next pass. With
    ``rendering``, the self-tests include the rendering ones it returns (a core running as root)."""
    meter = config.meter
    session_options(meter)  # a bad password file fails the start, not every poll
    store = Store.open(Path(config.store.path))
    log.info("reader loop: meter %s every %gs, store %s", meter.port, meter.poll_interval, config.store.path)
    try:
        auditor = Auditor.for_config(store, config, create_key=True)
        record_start(auditor, store, config)
        loop = CoreLoop(config, store, auditor, after_readout, rng or random.Random(), rendering=rendering)
        installed = installed_signature(config)
        while not stop.is_set():
            started = time.monotonic()
            wait = None
            if reload is not None and installed_signature(config) != installed:
                installed = installed_signature(config)
                _reload_profiles(loop, reload)
            try:
                loop.check_time()
                loop.self_test_if_due()
                wait = loop.read()
                loop.stored()
            except Exception:  # a bug must not end an unattended gateway: log it, back off
                wait = _failed(loop.stats, meter.poll_interval, loop.rng)
                log.exception("readout failed unexpectedly; retry in %.1fs", wait)
                auditor.record("system", "readout.failed", {"error": "unexpected (see the service log)"})
            record_part_events(auditor, parts)
            try:
                loop.housekeeping()
            except Exception:
                log.exception("retention failed unexpectedly")
            if max_readouts is not None and loop.stats.readouts >= max_readouts and not loop.waiting.items:
                break
            stop.wait(wait if wait is not None else max(0.0, meter.poll_interval - (time.monotonic() - started)))
        record_part_events(auditor, parts)  # what happened since the last pass
        auditor.record("system", "core.stopped", {"readouts": loop.stats.readouts, "failures": loop.stats.failures,
                                                  "waiting": len(loop.waiting.items)})
        if loop.waiting.items:
            log.error("stopping with %d readouts not stored (the store still fails)", len(loop.waiting.items))
    finally:
        store.close()
    return loop.stats


def installed_signature(config: GatewayConfig) -> tuple[tuple[str, int], ...]:
    """What ``profiles.d`` holds, cheaply: names and modification times."""
    folder = config.paths.state / INSTALLED_DIR
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.glob("*.json")))
    except OSError:
        return ()


def _reload_profiles(loop: CoreLoop, reload: Callable[[], tuple[GatewayConfig, Callable[[Store, str], None] | None]]
                     ) -> None:
    try:
        config, after = reload()
    except (ConfigError, SmgwError, PkiError) as exc:  # keep running with what we have
        log.warning("installed profiles changed, but the config does not load: %s", exc)
        loop.auditor.record("system", "profiles.reload_failed", {"message": str(exc)[:300]})
        return
    before = [p.name for p in loop.config.profiles]
    loop.config, loop.after_readout = config, after
    loop.auditor.record("system", "profiles.changed", {"from": before, "to": [p.name for p in config.profiles]})
    for meter_id in sorted(loop.consumers_told):  # the households see the change in their log
        record_profiles(loop.auditor, loop.store, config, meter_id)


def record_part_events(auditor: Auditor, parts: PartSupervisor | ThreadParts | None) -> None:
    """The supervised parts' starts and exits, into the system log from the core's thread."""
    for event, detail in parts.drain() if parts is not None else ():
        auditor.record("system", event, detail)


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


def self_test(config: GatewayConfig, store: Store, auditor: Auditor,
              rendering: Callable[[GatewayConfig], list[Check]] | None = None) -> list[Check]:
    """Run the checks this process runs (and ``rendering``'s, from a child: see
    ``selftest.rendering_in_child``), publish them, and log each change of outcome."""
    before = read_results(config)
    checks = run_checks(config, store, firewall=False, rendering=rendering)
    try:
        write_results(config, checks)
    except OSError as exc:  # status and the portal miss it; the gate below still sees the failures
        log.error("self-test results not written to %s: %s", config.paths.run, exc)
        auditor.record("system", "selftest.unpublished", {"message": str(exc)[:200]})
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

    def open(self, config: GatewayConfig, auditor: Auditor, own: list[Check]) -> bool:
        """``own``: this process's latest checks, which count even if publishing them failed."""
        failed = blocking({**read_results(config), **{c.name: c for c in own}})
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


def record_start(auditor: Auditor, store: Store, config: GatewayConfig) -> None:
    """``core.started`` with the config's digest, and ``config.changed`` when it differs
    from the one the last start recorded: the GWA sees every configuration change."""
    digest = snapshot_digest(config)
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
