"""The thin I/O edge: a pyserial port driven by the sans-I/O ``ReadoutClient``.

All protocol decisions live in ``reader.protocol``; this module only opens the port,
performs the client's actions (write, drain and switch speed, discard noise) and feeds
back what arrives, under the client's quiet-time limit and an overall deadline.
"""

from __future__ import annotations

import errno
import os
import select
import termios
import time
from typing import Literal

import serial

from reader.errors import MeterSilentError, PortError
from reader.frames import INITIAL_BAUD, MODE_D_BAUD, add_even_parity
from reader.models import Readout
from reader.protocol import Action, Discard, ReadoutClient, SessionOptions, SetBaud, Write

Framing = Literal["7E1", "8N1"]


def is_pseudo_terminal(path: str) -> bool:
    """Linux ptys carry only CS8: asking for 7E1 makes ``tcsetattr`` fail with EINVAL."""
    return os.path.realpath(path).startswith("/dev/pts/")


def effective_framing(path: str, framing: Framing) -> Framing:
    """7E1 becomes 8N1 with parity in bit 7 on a pty (the meter simulator's line)."""
    return "8N1" if framing == "7E1" and is_pseudo_terminal(path) else framing


def open_port(path: str, *, baud: int = INITIAL_BAUD, framing: Framing = "7E1") -> serial.Serial:
    """Open ``path`` exclusively; every failure becomes a ``PortError`` naming the port.

    ``8N1`` is for adapters that cannot do 7E1: the frame has the same ten bits, so the
    parity bit travels as bit 7 and is added on write and stripped on read.
    """
    seven = effective_framing(path, framing) == "7E1"
    try:
        return serial.Serial(
            port=path,
            baudrate=baud,
            bytesize=serial.SEVENBITS if seven else serial.EIGHTBITS,
            parity=serial.PARITY_EVEN if seven else serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE,
            timeout=0,
            write_timeout=10,
            xonxoff=False,
            rtscts=False,
            dsrdtr=False,
            exclusive=True,
        )
    except (serial.SerialException, OSError, ValueError, termios.error) as exc:
        raise PortError(_port_problem(path, exc)) from None


def _port_problem(path: str, exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT or "[Errno 2]" in text or "No such file" in text:
        return f"serial port {path}: does not exist"
    if code in (errno.EBUSY, errno.EAGAIN) or "Resource temporarily unavailable" in text or "busy" in text.lower():
        return f"serial port {path}: busy (opened by another process)"
    if code == errno.EACCES or "Permission denied" in text:
        return f"serial port {path}: permission denied"
    if "Not a typewriter" in text or code == errno.ENOTTY:
        return f"serial port {path}: not a serial device"
    return f"serial port {path}: cannot open ({text})"


class SerialSession:
    """Run one ``ReadoutClient`` over an open port."""

    def __init__(self, port: serial.Serial, *, framing: Framing = "7E1", name: str = "") -> None:
        self.port = port
        self.framing = framing
        self.name = name or str(port.port)
        self._write_started = 0.0
        self._last_activity = 0.0

    def run(self, client: ReadoutClient, *, timeout: float) -> Readout:
        """Complete the session within ``timeout`` seconds or raise ``MeterSilentError``."""
        deadline = time.monotonic() + timeout
        start_baud = MODE_D_BAUD if client.options.mode == "D" else INITIAL_BAUD
        if self.port.baudrate != start_baud:
            self.port.baudrate = start_baud
        self.port.reset_input_buffer()
        self._last_activity = time.monotonic()
        self._perform(client.initiate())
        while not client.done:
            now = time.monotonic()
            if now >= deadline:
                raise MeterSilentError(
                    f"meter on {self.name} gave no complete answer within {timeout:g} s"
                )
            quiet_limit = self._last_activity + client.timeout_seconds()
            if now >= quiet_limit:
                self._last_activity = now
                self._perform(client.timeout())
                continue
            data = self._read(min(quiet_limit, deadline) - now)
            if data:
                self._last_activity = time.monotonic()
                self._perform(client.receive_data(data))
        assert client.result is not None
        return client.result

    def _read(self, wait: float) -> bytes:
        """Wait with select() (the port stays non-blocking: re-setting pyserial's timeout
        reconfigures the tty on every call), then take whatever has arrived."""
        try:
            ready, _, _ = select.select([self.port.fileno()], [], [], max(wait, 0.0))
            if not ready:
                return b""
            return bytes(self.port.read(self.port.in_waiting or 1))
        except (serial.SerialException, OSError) as exc:
            raise PortError(f"serial port {self.name}: read failed ({exc})") from None

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Write):
                data = action.data if self.framing == "7E1" else add_even_parity(action.data)
                self._write_started = time.monotonic()
                try:
                    self.port.write(data)
                except (serial.SerialException, OSError) as exc:
                    raise PortError(f"serial port {self.name}: write failed ({exc})") from None
            elif isinstance(action, SetBaud):
                self.port.flush()  # tcdrain: what we wrote leaves at the old rate
                remaining = action.after - (time.monotonic() - self._write_started)
                if remaining > 0:
                    time.sleep(remaining)
                if self.port.baudrate != action.baud:
                    try:
                        self.port.baudrate = action.baud
                    except (serial.SerialException, OSError, ValueError, termios.error) as exc:
                        raise PortError(f"serial port {self.name}: cannot switch to {action.baud} Bd ({exc})") from None
            elif isinstance(action, Discard):
                time.sleep(action.delay)
                self.port.reset_input_buffer()
            self._last_activity = time.monotonic()


def read_meter(
    path: str,
    options: SessionOptions | None = None,
    *,
    timeout: float = 30.0,
    framing: Framing = "7E1",
) -> Readout:
    """One complete readout from the meter on ``path`` (the CLI's and the core's entry)."""
    client = ReadoutClient(options)
    framing = effective_framing(path, framing)
    port = open_port(path, framing=framing)
    try:
        return SerialSession(port, framing=framing, name=path).run(client, timeout=timeout)
    finally:
        port.close()
