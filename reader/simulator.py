"""A simulated meter (an Iskraemeco MT831 as it answers IEC 62056-21), as a pure machine.

The meter side of the protocol, written from the standard independently of the client in
``reader.protocol``, so that tests meet two implementations on a real pseudo-terminal.
It never sleeps or reads a clock: ``receive`` and ``tick`` return ``Emit`` instructions
(wait, switch the line speed, write) for the runtime in ``reader.sim_pty``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from reader.frames import ACK, EOT, ETX, MODE_B_BAUD, MODE_C_BAUD, NAK, SOH, STX, bcc, with_bcc

SCENARIOS: dict[str, str] = {
    "normal": "mode C readout at 9600 Bd and programming mode (P.01, P.98)",
    "bad-bcc-once": "the first data message has a wrong BCC, later ones are right",
    "bad-bcc-always": "every data message has a wrong BCC",
    "silent": "never answers",
    "slow": "real line pacing (300/9600 Bd) and response time tr = 200 ms",
    "addressed": "answers only /?12345678! (silent to /?! and other addresses)",
    "garbage": "noise bytes before the identification on the first sign-on",
    "load-profile": "like normal (programming mode is always available in mode C)",
    "mode-a": "mode A: data at 300 Bd right after the identification",
    "mode-b": "mode B: both sides switch to 9600 Bd after the identification, no ACK",
    "mode-d": "mode D: pushes identification and data at 2400 Bd every second, ignores requests",
    "mode-e": "offers HDLC (\\2) in the identification; answers ACK 2.. with an HDLC frame",
    "echo": "an optical head echoes every byte the client writes",
    "parity8": "output carries even parity in bit 7 (a 7E1 line read as 8N1)",
    "lf-only": "data lines end LF instead of CR LF",
    "glued": "the end marker ! is glued to the last data line",
    "truncated": "the data message stops in the middle, then silence",
    "hostile": "a data message with a valid BCC but malformed, oversized content",
}

IDENT_MODEL = "MT831-3031"
_SIGN_ON = re.compile(rb"/\?([A-Za-z0-9]*)!\r\n")
_GARBAGE = bytes((0x00, 0xFF, 0x13, 0x7F, 0x55, 0xAA, 0x0D, 0x21, 0x00, 0x3F))
METER_NUMBER = "37155794"


@dataclass(frozen=True, slots=True, kw_only=True)
class Emit:
    """Wait ``delay``, switch to ``baud`` (if given), then write ``data``; when
    ``expect_client_baud`` is set and the client's port runs at another speed, the line
    garbles the bytes, as a real baud mismatch does."""

    data: bytes = b""
    delay: float = 0.0
    baud: int | None = None
    expect_client_baud: int | None = None


def expected_registers(n: int) -> dict[str, Decimal]:
    """Energy registers of the n-th readout served (n from 0): exact, and 1.8.0 = 1.8.1 + 1.8.2."""
    t1 = Decimal("3015.100") + Decimal("0.100") * n
    t2 = Decimal("1402.118") + Decimal("0.025") * n
    return {"1.8.0": t1 + t2, "1.8.1": t1, "1.8.2": t2, "2.8.0": Decimal("0.000")}


def register_lines(n: int) -> list[str]:
    regs = expected_registers(n)
    e = {k: format(v, "011.3f") for k, v in regs.items()}
    return [
        f"0.0.0({METER_NUMBER})",
        f"C.1.0({METER_NUMBER})",
        "0.9.1(123456)",
        "0.9.2(1231125)",
        f"1.8.0({e['1.8.0']}*kWh)",
        f"1.8.1({e['1.8.1']}*kWh)",
        f"1.8.2({e['1.8.2']}*kWh)",
        f"2.8.0({e['2.8.0']}*kWh)",
        "1.6.0(0001.245*kW)(2311151215)",
        "1.6.0*01(0001.300*kW)(2310021730)",
        "F.F(00000000)",
        "C.7.0(0005)",
        "32.7.0(230,1*V)",
        "52.7.0(229.8*V)",
        "31.7.0(1.234 A)",
        "0.2.0(V1.02)",
        "C.90.1()",
        "96.77.2(ERROR)",
        "21.7.0(0.412*kW)41.7.0(0.000*kW)",
        f"1.8.0({e['1.8.0']}*kWh)",
    ]


PROFILE_CHANNELS = "(4)(1.5)(kW)(2.5)(kW)(5.5)(kvar)(8.5)(kvar)"
PROFILE_LINES = [
    # summer time evening before the end of DST (29 Oct 2023, 03:00 CEST -> 02:00 CET)
    f"P.01(12310282200)(00000000)(15){PROFILE_CHANNELS}",
    "(0.412)(0.000)(0.103)(0.000)", "(0.398)(0.000)(0.101)(0.000)",
    "(0.405)(0.000)(0.099)(0.000)", "(0.377)(0.000)(0.090)(0.000)",
    # a power failure: the status word changes, a new header starts
    f"P.01(12310282330)(00000080)(15){PROFILE_CHANNELS}",
    "(0.120)(0.000)(0.030)(0.000)", "(0.000)(0.000)(0.000)(0.000)", "(0.250)(0.000)(0.060)(0.000)",
    # after the season change: standard time
    f"P.01(02310290215)(00000000)(15){PROFILE_CHANNELS}",
    "(0.300)(0.000)(0.070)(0.000)", "(0.310)(0.000)(0.071)(0.000)", "(0.295)(0.000)(0.069)(0.000)",
]
LOGBOOK_LINES = [
    "P.98(1231028233000)(00000080)()(0)",
    "P.98(1231029000500)(00000040)()(0)",
    "P.98(1231029030000)(00000008)()(0)",
    "P.98(0231029020000)(00000008)()(0)",
    "P.98(0231115101500)(00002000)()(0)",
]


def wire_time(nbytes: int, baud: int) -> float:
    return nbytes * 10 / baud


class MeterSimulator:
    """State: idle -> identified -> (readout | password -> commands). Any sign-on resets."""

    def __init__(self, scenario: str = "normal", *, address: str = "12345678",
                 password: str = "00000000") -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}")
        self.scenario = scenario
        self.address = address
        self.password = password
        self.tr = 0.2 if scenario == "slow" else 0.08
        self.state = "idle"
        self.baud = 300
        self.readouts_served = 0
        self.sign_ons = 0
        self._buffer = b""
        self._last: bytes = b""
        self._repeats = 0
        self._chunks: list[bytes] = []
        self._next_push = 0.0

    # --------------------------------------------------------------- messages
    def identification(self) -> bytes:
        char = {"mode-a": "Z", "mode-b": "E", "mode-d": "3"}.get(self.scenario, "5")
        enhanced = "\\2" if self.scenario == "mode-e" else ""
        return f"/ISK{char}{enhanced}{IDENT_MODEL}\r\n".encode("ascii")

    def data_message(self) -> bytes:
        lines = register_lines(self.readouts_served)
        self.readouts_served += 1
        eol = "\n" if self.scenario == "lf-only" else "\r\n"
        if self.scenario == "hostile":
            lines = lines[:3] + ["1.8.0((((" + "9" * 10_000 + ")", "\x1b[2J(ERROR)"]
        if self.scenario == "glued":
            text = eol.join(lines) + "!" + eol
        else:
            text = eol.join(lines) + eol + "!" + eol
        message = with_bcc(bytes((STX,)) + text.encode("ascii") + bytes((ETX,)))
        if self.scenario == "bad-bcc-always" or (self.scenario == "bad-bcc-once" and self.readouts_served == 1):
            message = message[:-1] + bytes(((message[-1] ^ 0x5A) & 0x7F,))
        if self.scenario == "truncated":
            message = message[: len(message) // 2]
        return message

    @staticmethod
    def block(lines: list[str], end: int = ETX) -> bytes:
        return with_bcc(bytes((STX,)) + "".join(f"{ln}\r\n" for ln in lines).encode("ascii") + bytes((end,)))

    def answer_lines(self, register: str) -> list[str] | None:
        if register.startswith("P.01("):
            return PROFILE_LINES
        if register.startswith("P.98("):
            return LOGBOOK_LINES
        return None

    # ----------------------------------------------------------------- events
    def receive(self, data: bytes, client_baud: int) -> list[Emit]:
        """Bytes the client wrote, and the speed its port ran at when it wrote them."""
        if self.scenario in ("silent", "mode-d"):
            return []
        emits: list[Emit] = [Emit(data=data)] if self.scenario == "echo" else []
        self._buffer += data
        while True:
            step = self._step(client_baud)
            if step is None:
                break
            emits.extend(step)
        return emits

    def tick(self, now: float) -> list[Emit]:
        """Mode D: push a telegram every second, at 2400 Bd."""
        if self.scenario != "mode-d" or now < self._next_push:
            return []
        self._next_push = now + 1.0
        return [Emit(data=self.identification() + self.data_message(), baud=2400, expect_client_baud=2400)]

    def _step(self, client_baud: int) -> list[Emit] | None:
        sign_on = _SIGN_ON.search(self._buffer)
        if sign_on is not None:
            self._buffer = self._buffer[sign_on.end():]
            return self._on_sign_on(sign_on.group(1).decode("ascii"))
        if self.state == "identified":
            return self._on_option(client_baud)
        if self.state in ("password", "commands"):
            return self._on_command()
        if self.state == "partial":
            return self._on_partial_ack()
        if len(self._buffer) > 256:
            self._buffer = self._buffer[-64:]
        return None

    def _reset(self) -> list[Emit]:
        self.state = "idle"
        if self.baud != 300:
            self.baud = 300
            return [Emit(baud=300)]
        return []

    def _on_sign_on(self, address: str) -> list[Emit]:
        emits = self._reset()
        if self.scenario == "addressed":
            if address != self.address:
                return emits
        elif address not in ("", self.address):
            return emits
        self.sign_ons += 1
        ident = self.identification()
        if self.scenario == "garbage" and self.sign_ons == 1:
            ident = _GARBAGE + ident
        emits.append(Emit(data=ident, delay=self.tr, expect_client_baud=300))
        if self.scenario == "mode-a":
            emits.append(Emit(data=self.data_message(), delay=self.tr, expect_client_baud=300))
        elif self.scenario == "mode-b":
            self.baud = MODE_B_BAUD["E"]
            emits.append(Emit(data=self.data_message(), delay=self.tr, baud=self.baud,
                              expect_client_baud=self.baud))
        else:
            self.state = "identified"
        return emits

    def _on_option(self, client_baud: int) -> list[Emit] | None:
        start = self._buffer.find(bytes((ACK,)))
        if start < 0 or len(self._buffer) < start + 6:
            return None
        option = self._buffer[start:start + 6]
        self._buffer = self._buffer[start + 6:]
        v, z, y = chr(option[1]), chr(option[2]), chr(option[3])
        if option[4:] != b"\r\n" or client_baud != 300 or z not in MODE_C_BAUD or z > "5" or y not in "01":
            self.state = "idle"
            return []
        if v == "2":
            self.state = "idle"
            if self.scenario == "mode-e":
                return [Emit(data=b"\x7e\xa0\x07\x03\x21\x93\x0f\x01\x7e", delay=self.tr)]
            return []
        if v != "0":
            self.state = "idle"
            return []
        self.baud = MODE_C_BAUD[z]
        delay = wire_time(len(option), 300) + self.tr  # the ACK arrives only after its wire time
        if y == "0":
            message = self.data_message()
            self.state = "idle"
            emits = [Emit(data=message, delay=delay, baud=self.baud, expect_client_baud=self.baud)]
            self.baud = 300
            return emits + [Emit(baud=300)]
        self.state = "password"
        return [self._send(with_bcc(b"\x01P0\x02(12345678)\x03"), delay=delay, baud=self.baud)]

    def _send(self, data: bytes, *, delay: float | None = None, baud: int | None = None) -> Emit:
        self._last = data
        return Emit(data=data, delay=self.tr if delay is None else delay, baud=baud,
                    expect_client_baud=self.baud)

    def _on_nak(self) -> list[Emit]:
        self._repeats += 1
        if self._repeats > 3:
            return self._reset()
        return [self._send(self._last)]

    def _on_command(self) -> list[Emit] | None:
        buf = self._buffer
        if buf[:1] == bytes((NAK,)):
            self._buffer = buf[1:]
            return self._on_nak()
        start = buf.find(bytes((SOH,)))
        if start < 0:
            self._buffer = b""
            return None
        end = buf.find(bytes((ETX,)), start)
        if end < 0 or end + 1 >= len(buf):
            return None
        message = buf[start:end + 2]
        self._buffer = buf[end + 2:]
        if bcc(message[1:-1]) != message[-1]:
            return [Emit(data=bytes((NAK,)), delay=self.tr, expect_client_baud=self.baud)]
        self._repeats = 0
        cmd = message[1:3].decode("ascii", "replace")
        operand = message[4:-2].decode("ascii", "replace") if message[3:4] == b"\x02" else ""
        if cmd == "B0":
            return self._reset()
        if self.state == "password":
            if cmd == "P1" and operand == f"({self.password})":
                self.state = "commands"
                return [Emit(data=bytes((ACK,)), delay=self.tr, expect_client_baud=self.baud)]
            return [Emit(data=bytes((NAK,)), delay=self.tr, expect_client_baud=self.baud)]
        if cmd in ("R5", "R6"):
            lines = self.answer_lines(operand)
            if lines is None:
                return [self._send(self.block(["(ERROR)"]))]
            if cmd == "R5":
                return [self._send(self.block(lines))]
            groups = [lines[i:i + 3] for i in range(0, len(lines), 3)]
            self._chunks = [self.block(g, EOT) for g in groups[:-1]] + [self.block(groups[-1])]
            first = self._chunks.pop(0)
            self.state = "partial" if self._chunks else "commands"
            return [self._send(first)]
        return [self._send(self.block(["(ERROR)"]))]

    def _on_partial_ack(self) -> list[Emit] | None:
        if not self._buffer:
            return None
        first, self._buffer = self._buffer[0], self._buffer[1:]
        if first == NAK:
            return self._on_nak()
        if first != ACK:
            return []
        self._repeats = 0
        chunk = self._chunks.pop(0)
        if not self._chunks:
            self.state = "commands"
        return [self._send(chunk)]
