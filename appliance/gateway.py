"""The core service's reader loop: poll the meter, store each readout, survive failures.

A failing meter never ends the process: the failure is logged and the next attempt waits
with exponential backoff (capped), so a dead meter is not hammered and a recovered one is
read again soon. Storage is one transaction per readout (``Store.save_readout``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.config import GatewayConfig, MeterConfig
from appliance.errors import SmgwError
from appliance.store import Store, StoreError
from reader.errors import ReaderError
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
        while not stop.is_set():
            started = time.monotonic()
            try:
                readout = read_meter(meter.port, options, timeout=meter.timeout, framing=meter.framing)
                readout_id = store_readout(store, meter, readout)
            except (ReaderError, StoreError, SmgwError) as exc:
                wait = _failed(stats, meter.poll_interval, rng)
                log.warning("readout failed (%s: %s); retry in %.1fs", type(exc).__name__, exc, wait)
                stop.wait(wait)
                continue
            except Exception:  # a bug must not end an unattended gateway: log it, back off
                wait = _failed(stats, meter.poll_interval, rng)
                log.exception("readout failed unexpectedly; retry in %.1fs", wait)
                stop.wait(wait)
                continue
            stats.readouts += 1
            stats.consecutive_failures = 0
            for note in readout.notes:
                log.info("readout %d: %s", readout_id, note)
            log.info(
                "readout %d stored: %d readings from %s (attempts %d)",
                readout_id, len(readout.readings), readout.identification.text, readout.attempts,
            )
            if after_readout is not None:
                try:  # processing and sending must never stop the reader
                    after_readout(store, meter.id or readout.meter_id())
                except Exception:
                    log.exception("processing after readout %d failed", readout_id)
            if max_readouts is not None and stats.readouts >= max_readouts:
                break
            stop.wait(max(0.0, meter.poll_interval - (time.monotonic() - started)))
    finally:
        store.close()
    return stats
