"""The IEC 62056-21 client (HHU side) as a pure state machine.

It never touches a port or a clock. The transport feeds it the bytes that arrived
(``receive_data``) or tells it that the line stayed quiet too long (``timeout``); the
machine answers with a list of actions for the transport to perform in order (write these
bytes, switch the line speed after this delay, wait and discard noise). When ``done`` is
true, ``result`` holds the readout. Failures raise ``ReaderError`` subclasses: the meter's
fault is a ``ProtocolError``/``MeterSilentError``, ours a ``LocalProtocolError``.

One session may have two phases: a data readout (option ``0``) and, for the load profile
and logbook, a second sign-on into programming mode (option ``1``: P0/P1 password, R5/R6
reads, B0 break). A bad block in the readout restarts the sign-on; a bad block in
programming mode is answered with NAK, as the standard asks, so the meter repeats it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from reader.errors import (
    BlockCheckError,
    LocalProtocolError,
    MeterSilentError,
    ProtocolError,
    ReaderError,
    UnsupportedModeError,
)
from reader.frames import (
    ACK,
    EOT,
    ETX,
    INITIAL_BAUD,
    MODE_B_BAUD,
    MODE_C_BAUD,
    MODE_D_BAUD,
    NAK,
    SOH,
    STX,
    bcc,
    command,
    crc16_dsmr,
    strip_parity,
)
from reader.loadprofile import is_error_answer, parse_load_profile, parse_logbook
from reader.meter_time import DEFAULT_ZONE, format_meter_time
from reader.models import Identification, LoadProfileInterval, LogbookEntry, Reading, Readout
from reader.telegram import decode_text, parse_data_lines, parse_identification

Mode = Literal["A", "B", "C", "D"]
EchoMode = Literal["auto", "on", "off"]

#: The standard's longest response time tr and inter-character time (1500 ms).
RESPONSE_TIMEOUT = 1.5
MAX_MESSAGE = 64 * 1024  # a readout larger than this is not a meter talking
_ADDRESS_OK = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz ")


def wire_time(nbytes: int, baud: int) -> float:
    """Seconds ``nbytes`` 7E1 characters (10 bits each) take on the line."""
    return nbytes * 10 / baud


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOptions:
    """What one session asks of the meter; validated on construction."""

    mode: Mode = "C"
    address: str = ""
    max_baud: int = 19200
    attempts: int = 3
    echo: EchoMode = "auto"
    password: str = "00000000"
    load_profile: bool = False
    logbook: bool = False
    profile_from: datetime | None = None
    profile_to: datetime | None = None
    partial_blocks: bool = False  #: read with R6 (partial blocks, EOT/ACK) instead of R5
    zone: str = DEFAULT_ZONE
    response_timeout: float = RESPONSE_TIMEOUT + 1.0  #: tr max plus the identification's wire time
    push_timeout: float = 30.0  #: mode D: how long to wait for the meter's own push
    restart_delay: float = 0.3  #: quiet time before a new sign-on after a failure

    def __post_init__(self) -> None:
        if self.mode not in ("A", "B", "C", "D"):
            if str(self.mode).upper() == "E":
                raise UnsupportedModeError(
                    "mode E (HDLC, IEC 62056-46/DLMS) is not supported; use mode A, B, C or D"
                )
            raise LocalProtocolError(f"unknown protocol mode {self.mode!r}")
        if len(self.address) > 32 or not _ADDRESS_OK.issuperset(self.address):
            raise LocalProtocolError(f"device address {self.address!r}: up to 32 letters/digits")
        if not 1 <= self.attempts <= 10:
            raise LocalProtocolError("attempts must be between 1 and 10")
        if self.max_baud not in MODE_C_BAUD.values():
            raise LocalProtocolError(f"max_baud {self.max_baud} is not an IEC 62056-21 rate")
        if not self.password.isprintable() or "(" in self.password or ")" in self.password:
            raise LocalProtocolError("password: printable characters without brackets only")
        if (self.load_profile or self.logbook) and self.mode != "C":
            raise LocalProtocolError("load profile and logbook need programming mode (mode C)")


# Actions the transport performs, in order.
@dataclass(frozen=True, slots=True, kw_only=True)
class Write:
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SetBaud:
    """Drain output, then switch the line to ``baud`` once ``after`` seconds have passed
    since the last write started (the wire time of what is still leaving)."""

    baud: int
    after: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Discard:
    """Wait ``delay`` seconds of quiet, then drop whatever input arrived (resynchronise)."""

    delay: float


Action = Write | SetBaud | Discard


class State(enum.Enum):
    IDLE = "idle"
    AWAIT_IDENT = "await-identification"
    AWAIT_DATA = "await-data"
    AWAIT_P0 = "await-password-prompt"
    AWAIT_P1_ACK = "await-password-ack"
    AWAIT_BLOCK = "await-block"
    DONE = "done"


class Phase(enum.Enum):
    READOUT = "0"
    PROGRAMMING = "1"


@dataclass(slots=True)
class _Partial:
    """What the session has gathered so far."""

    identification: Identification | None = None
    readings: list[Reading] = field(default_factory=list)
    load_profile: list[LoadProfileInterval] | None = None
    logbook: list[LogbookEntry] | None = None
    notes: list[str] = field(default_factory=list)


class ReadoutClient:
    """Drive one complete readout; see the module docstring for the contract."""

    def __init__(self, options: SessionOptions | None = None) -> None:
        self.options = options or SessionOptions()
        self.state = State.IDLE
        self.phase = Phase.READOUT
        self.attempt = 0  #: sign-ons made in the current phase
        self.total_attempts = 0
        self.restarts = 0  #: sign-ons repeated after a failure (the readout's retries)
        self.baud = INITIAL_BAUD
        self._buffer = bytearray()
        self._echo_expected = b""
        self._echo_hold = bytearray()
        self._ident_raw = b""
        self._echo_mode: EchoMode = self.options.echo
        self._partial = _Partial()
        self._requests: list[tuple[str, str]] = []  # (register, R-command data) still to read
        self._block_text: list[str] = []
        self._last_sent = b""
        self._nak_count = 0
        self.result: Readout | None = None

    # ----------------------------------------------------------------- public
    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def initiate(self) -> list[Action]:
        """Start the session: the sign-on, or (mode D) just listen."""
        if self.state is not State.IDLE:
            raise LocalProtocolError("initiate() called twice")
        if self.options.mode == "D":
            self.state = State.AWAIT_IDENT
            self.attempt = self.total_attempts = 1
            return [SetBaud(baud=MODE_D_BAUD)] if self.baud != MODE_D_BAUD else []
        return self._sign_on(first=True)

    def timeout_seconds(self) -> float:
        """How long the transport may wait for the next byte before calling ``timeout``."""
        if self.options.mode == "D" and self.state is State.AWAIT_IDENT:
            return self.options.push_timeout
        if self.state is State.AWAIT_IDENT and not self._buffer:
            return self.options.response_timeout
        return RESPONSE_TIMEOUT

    def timeout(self) -> list[Action]:
        """The line stayed quiet for ``timeout_seconds``."""
        if self.state is State.AWAIT_IDENT and not self._buffer:
            if self.options.mode == "D":
                raise MeterSilentError("mode D: the meter pushed nothing within the push timeout")
            return self._restart("no answer to the sign-on", silent=True)
        if self.state in (State.AWAIT_P0, State.AWAIT_P1_ACK, State.AWAIT_BLOCK):
            return self._restart(f"meter stopped answering ({self.state.value})", silent=True)
        return self._restart(f"message cut off ({self.state.value})", silent=True)

    def receive_data(self, data: bytes) -> list[Action]:
        """Feed bytes from the line (parity bit stripped here); returns actions."""
        if self.state in (State.IDLE, State.DONE):
            return []
        data = strip_parity(data)
        if self._echo_expected:
            data = self._take_echo(data)
            if not data:
                return []
        self._buffer += data
        if len(self._buffer) > MAX_MESSAGE:
            return self._restart("message longer than any meter sends", fatal=ProtocolError)
        actions: list[Action] = []
        # one call may complete several steps (e.g. identification and data of mode D)
        while not self.done:
            step = self._step()
            if step is None:
                break
            actions.extend(step)
            if any(isinstance(a, Discard) for a in step):
                break
        return actions

    # ------------------------------------------------------------- internals
    def _sign_on(self, *, first: bool = False) -> list[Action]:
        self.attempt += 1
        self.total_attempts += 1
        self._buffer.clear()
        self._echo_hold.clear()
        self._block_text.clear()
        self.state = State.AWAIT_IDENT
        actions: list[Action] = []
        if self.options.mode == "D":
            return actions  # the meter pushes on its own: just listen for the next telegram
        if self.baud != INITIAL_BAUD:
            actions.append(SetBaud(baud=INITIAL_BAUD))
            self.baud = INITIAL_BAUD
        if not first:
            actions.append(Discard(delay=self.options.restart_delay))
        actions.append(self._write(f"/?{self.options.address}!\r\n".encode("ascii")))
        return actions

    def _write(self, data: bytes) -> Write:
        self._last_sent = data
        if self._echo_mode != "off":
            self._echo_expected = data
        return Write(data=data)

    def _take_echo(self, data: bytes) -> bytes:
        """Drop the optical head's echo of what we wrote, when there is one."""
        pending = bytes(self._echo_hold) + data if self._echo_hold else data
        self._echo_hold.clear()
        echo = self._echo_expected
        if pending.startswith(echo):
            self._echo_expected = b""
            if self._echo_mode == "auto":
                self._echo_mode = "on"
                self._partial.notes.append("echo detected: suppressing it")
            return pending[len(echo):]
        if echo.startswith(pending) and self._echo_mode != "off":
            self._echo_hold += pending  # could still be the echo: hold it back until we know
            return b""
        self._echo_expected = b""
        if self._echo_mode == "auto":
            self._echo_mode = "off"
        return pending

    def _restart(
        self, reason: str, *, silent: bool = False, fatal: type[ReaderError] | None = None
    ) -> list[Action]:
        """Start the sign-on again, or give up after the configured attempts."""
        self._partial.notes.append(f"attempt {self.total_attempts}: {reason}")
        self.restarts += 1
        if self.attempt >= self.options.attempts:
            if fatal is not None:
                raise fatal(f"{reason} (after {self.attempt} attempts)")
            if silent:
                raise MeterSilentError(f"{reason} (after {self.attempt} attempts)")
            raise BlockCheckError(f"{reason} (after {self.attempt} attempts)")
        return self._sign_on()

    def _step(self) -> list[Action] | None:
        """Advance on the buffered bytes; None when more input is needed."""
        if self.state is State.AWAIT_IDENT:
            return self._on_identification()
        if self.state is State.AWAIT_DATA:
            return self._on_data()
        if self.state is State.AWAIT_P0:
            return self._on_password_prompt()
        if self.state is State.AWAIT_P1_ACK:
            return self._on_password_ack()
        if self.state is State.AWAIT_BLOCK:
            return self._on_block()
        return None

    def _on_identification(self) -> list[Action] | None:
        buf = self._buffer
        # a mode D meter may push a blank line first; anything else before '/' is noise
        while buf and buf[0] in (0x0D, 0x0A):
            del buf[0]
        if not buf:
            return None
        if buf[0] != ord("/"):
            return self._restart(f"garbage before the identification: {bytes(buf[:16])!r}")
        eol = buf.find(b"\n")
        if eol < 0:
            if len(buf) > 64:
                return self._restart("identification line too long")
            return None
        line = bytes(buf[: eol + 1])
        del buf[: eol + 1]
        self._ident_raw = line
        try:
            ident = parse_identification(line)
        except ProtocolError as exc:
            return self._restart(str(exc), fatal=ProtocolError)
        self._partial.identification = ident
        return self._after_identification(ident)

    def _after_identification(self, ident: Identification) -> list[Action]:
        char = ident.baud_char
        if self.options.mode == "D":
            self.state = State.AWAIT_DATA
            return []
        if char in MODE_C_BAUD:
            offered = MODE_C_BAUD[char]
            chosen = max(b for b in MODE_C_BAUD.values() if b <= min(offered, self.options.max_baud))
            z = next(k for k, v in MODE_C_BAUD.items() if v == chosen)
            if self.options.mode != "C":
                self._partial.notes.append(f"meter answers in mode C (configured {self.options.mode})")
            ack = self._write(bytes((ACK,)) + f"0{z}{self.phase.value}\r\n".encode("ascii"))
            self.baud = chosen
            self.state = State.AWAIT_DATA if self.phase is Phase.READOUT else State.AWAIT_P0
            return [ack, SetBaud(baud=chosen, after=wire_time(len(ack.data), INITIAL_BAUD))]
        if self.phase is Phase.PROGRAMMING:
            raise ProtocolError(
                f"meter identification {ident.text!r} offers no mode C: no programming mode "
                "for the load profile"
            )
        self.state = State.AWAIT_DATA
        if char in MODE_B_BAUD:
            self.baud = MODE_B_BAUD[char]
            return [SetBaud(baud=self.baud)]
        return []

    def _take_block(self, *, allow_eot: bool = False, start: int = STX) -> bytes | None:
        """Cut one ``STX/SOH ... ETX|EOT BCC`` block off the buffer, or None if incomplete."""
        buf = self._buffer
        if not buf:
            return None
        if buf[0] != start:
            if buf[0] == 0x7E:
                raise UnsupportedModeError("meter answered with an HDLC frame (mode E)")
            raise ProtocolError(f"expected a block, got {bytes(buf[:16])!r}")
        pos = buf.find(ETX, 1)
        if allow_eot:
            eot = buf.find(EOT, 1)
            if eot >= 0 and (pos < 0 or eot < pos):
                pos = eot
        if pos < 0 or pos + 1 >= len(buf):
            return None
        block = bytes(buf[: pos + 2])
        del buf[: pos + 2]
        return block

    def _on_data(self) -> list[Action] | None:
        buf = self._buffer
        if self.options.mode == "D" and buf[:1] not in (b"", bytes((STX,))):
            return self._on_mode_d_text()
        try:
            block = self._take_block()
        except ProtocolError as exc:
            return self._restart(str(exc))
        if block is None:
            return None
        checked = bcc(block[1:-1])
        if checked != block[-1]:
            return self._restart(
                f"data block BCC mismatch (got 0x{block[-1]:02x}, computed 0x{checked:02x})"
            )
        try:
            readings = parse_data_lines(decode_text(block[1:-2]), zone_name=self.options.zone)
        except (ProtocolError, UnicodeDecodeError) as exc:
            return self._restart(f"malformed data block: {exc}", fatal=ProtocolError)
        self._partial.readings = readings
        return self._after_readout()

    def _on_mode_d_text(self) -> list[Action] | None:
        """Mode D without STX: lines up to ``!`` (a CRC may follow on the same line)."""
        buf = self._buffer
        bang = buf.find(b"!")
        if bang < 0:
            return None
        eol = buf.find(b"\n", bang)
        if eol < 0:
            return None
        raw = bytes(buf[: bang + 1])
        checksum = bytes(buf[bang + 1 : eol]).strip()
        del buf[: eol + 1]
        if checksum:
            if len(checksum) != 4 or not all(c in b"0123456789ABCDEFabcdef" for c in checksum):
                return self._restart(f"bad checksum field {checksum[:8]!r} after '!'")
            computed = crc16_dsmr(self._ident_raw + raw)
            if computed != int(checksum, 16):
                return self._restart(
                    f"telegram CRC mismatch (got {checksum.decode()}, computed {computed:04X})"
                )
        text = decode_text(raw)
        try:
            self._partial.readings = parse_data_lines(text, zone_name=self.options.zone)
        except ProtocolError as exc:
            return self._restart(f"malformed data: {exc}", fatal=ProtocolError)
        return self._after_readout()

    def _after_readout(self) -> list[Action]:
        if not (self.options.load_profile or self.options.logbook):
            return self._finish()
        # second sign-on: the meter went back to 300 Bd after the data message
        self.phase = Phase.PROGRAMMING
        self.attempt = 0
        self._requests = self._programming_requests()
        return self._sign_on()

    def _programming_requests(self) -> list[tuple[str, str]]:
        cmd = "R6" if self.options.partial_blocks else "R5"
        requests = []
        if self.options.load_profile:
            lo = format_meter_time(self.options.profile_from, self.options.zone) if self.options.profile_from else ""
            hi = format_meter_time(self.options.profile_to, self.options.zone) if self.options.profile_to else ""
            requests.append((cmd, f"P.01({lo};{hi})"))
        if self.options.logbook:
            requests.append((cmd, "P.98(;)"))
        return requests

    def _nak_or_restart(self, reason: str) -> list[Action]:
        """Programming mode: ask for a repetition (NAK), up to the attempts, then sign on anew."""
        self._nak_count += 1
        self._buffer.clear()
        if self._nak_count >= self.options.attempts:
            self._nak_count = 0
            return self._restart(reason)
        self._partial.notes.append(f"NAK: {reason}")
        return [self._write(bytes((NAK,)))]

    def _on_password_prompt(self) -> list[Action] | None:
        try:
            block = self._take_block(start=SOH)
        except ProtocolError as exc:
            return self._restart(f"password prompt: {exc}")
        if block is None:
            return None
        if bcc(block[1:-1]) != block[-1]:
            return self._nak_or_restart("password prompt BCC mismatch")
        self._nak_count = 0
        if block[1:3] != b"P0":
            return self._restart(f"expected P0 password prompt, got {block[1:3]!r}", fatal=ProtocolError)
        self.state = State.AWAIT_P1_ACK
        return [self._write(command("P1", f"({self.options.password})"))]

    def _on_password_ack(self) -> list[Action] | None:
        buf = self._buffer
        if not buf:
            return None
        first = buf[0]
        if first == ACK:
            del buf[0]
            self._nak_count = 0
            return self._next_request()
        if first == NAK:
            # our P1 arrived damaged, or the meter refuses it: repeat once per attempt
            del buf[0]
            self._nak_count += 1
            if self._nak_count >= self.options.attempts:
                raise ProtocolError("meter refused the P1 password (NAK)")
            return [self._write(self._last_sent)]
        raise ProtocolError(f"meter refused the P1 password: {bytes(buf[:16])!r}")

    def _next_request(self) -> list[Action]:
        if not self._requests:
            return self._finish(break_session=True)
        cmd, data = self._requests[0]
        self._block_text.clear()
        self.state = State.AWAIT_BLOCK
        return [self._write(command(cmd, data))]

    def _on_block(self) -> list[Action] | None:
        try:
            block = self._take_block(allow_eot=True)
        except ProtocolError as exc:
            return self._nak_or_restart(str(exc))
        if block is None:
            return None
        if bcc(block[1:-1]) != block[-1]:
            return self._nak_or_restart("block BCC mismatch")
        self._nak_count = 0
        try:
            self._block_text.append(decode_text(block[1:-2]))
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"block is not ASCII: {exc}") from None
        if block[-2] == EOT:
            return [self._write(bytes((ACK,)))]
        return self._store_answer()

    def _store_answer(self) -> list[Action]:
        register = self._requests.pop(0)[1][:4]
        text = "".join(self._block_text)
        self._block_text.clear()
        if is_error_answer(text):
            self._partial.notes.append(f"meter has no {register}: (ERROR)")
            answer_empty = True
        else:
            answer_empty = False
        if register == "P.01":
            self._partial.load_profile = (
                [] if answer_empty else parse_load_profile(text, zone_name=self.options.zone)
            )
        else:
            self._partial.logbook = [] if answer_empty else parse_logbook(text, zone_name=self.options.zone)
        return self._next_request()

    def _finish(self, *, break_session: bool = False) -> list[Action]:
        partial = self._partial
        if partial.identification is None:  # pragma: no cover - unreachable by construction
            raise LocalProtocolError("finished without identification")
        self.result = Readout(
            identification=partial.identification,
            readings=tuple(partial.readings),
            load_profile=tuple(partial.load_profile) if partial.load_profile is not None else None,
            logbook=tuple(partial.logbook) if partial.logbook is not None else None,
            attempts=1 + self.restarts,
            notes=tuple(partial.notes),
        )
        self.state = State.DONE
        self._echo_expected = b""
        if break_session:
            self.baud = INITIAL_BAUD
            return [self._write(command("B0"))]
        return []
