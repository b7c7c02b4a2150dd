"""Run ``MeterSimulator`` on a pseudo-terminal: the runtime half of the simulator.

The client opens the symlink like a serial device. The slave fd stays open here so the
client can close and reopen it. The master sees the speed the client set on its side
(``tcgetattr``), which is how a baud-rate switch the client forgot becomes garbled bytes.
"""

from __future__ import annotations

import logging
import os
import select
import termios
import threading
import time
from pathlib import Path

from reader.frames import add_even_parity, strip_parity
from reader.simulator import Emit, MeterSimulator

log = logging.getLogger("smgw.meter-sim")
_SPEEDS = {getattr(termios, f"B{b}"): b for b in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)}


def client_baud(master: int) -> int:
    return _SPEEDS.get(termios.tcgetattr(master)[4], 0)


def _make_link(link: Path, target: str) -> None:
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a symlink; refusing to replace it")
    link.symlink_to(target)


def _perform(master: int, emit: Emit, *, paced: bool, parity8: bool) -> None:
    if emit.delay:
        time.sleep(emit.delay)
    if not emit.data:
        return
    data = emit.data
    speed = client_baud(master)
    if emit.expect_client_baud is not None and speed != emit.expect_client_baud:
        log.info("client at %s Bd, meter at %s Bd: garbled", speed, emit.expect_client_baud)
        data = bytes(b ^ 0x55 for b in data)
    if parity8:
        data = add_even_parity(data)
    if paced:
        per_char = 10 / (emit.expect_client_baud or speed or 300)
        for i in range(len(data)):
            os.write(master, data[i:i + 1])
            time.sleep(per_char)
    else:
        os.write(master, data)


def run_simulator(link: Path, scenario: str, *, stop: threading.Event | None = None,
                  ready: threading.Event | None = None, password: str = "00000000",
                  address: str = "12345678") -> None:
    """Serve until ``stop`` is set; prints one line when the link is ready."""
    machine = MeterSimulator(scenario, address=address, password=password)
    stop = stop or threading.Event()
    master, slave = os.openpty()
    slave_name = os.ttyname(slave)
    _make_link(link, slave_name)
    print(f"meter-sim: {scenario} on {link} -> {slave_name}", flush=True)
    if ready is not None:
        ready.set()
    paced = scenario == "slow"
    parity8 = scenario == "parity8"
    started = time.monotonic()
    try:
        while not stop.is_set():
            readable, _, _ = select.select([master], [], [], 0.05)
            emits: list[Emit] = []
            if readable:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    data = b""
                if data:
                    emits = machine.receive(strip_parity(data), client_baud(master))
            emits += machine.tick(time.monotonic() - started)
            for emit in emits:
                _perform(master, emit, paced=paced, parity8=parity8)
    finally:
        if link.is_symlink():
            link.unlink()
        os.close(slave)
        os.close(master)
