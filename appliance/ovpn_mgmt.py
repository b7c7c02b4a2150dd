"""The OpenVPN management protocol as a pure state machine (the h11 pattern).

Feed it the bytes read from the management socket and get typed events back; ask it for
the bytes of a command and write them yourself. No sockets here, so every message and
every refusal is unit-tested with byte strings. Values sent to OpenVPN are quoted and
escaped the way its option parser reads them; CR, LF and NUL are refused outright, as
they would start a second command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE = 4096


class ManagementError(ValueError):
    """A value that must not be sent, or a line that is not the protocol."""


@dataclass(frozen=True, slots=True)
class State:
    """``>STATE:time,name,detail,local_ip,remote_ip,remote_port,...``"""

    name: str
    detail: str
    local_ip: str
    remote_ip: str


@dataclass(frozen=True, slots=True)
class Hold:
    text: str


@dataclass(frozen=True, slots=True)
class PasswordNeeded:
    """OpenVPN asks for a secret, e.g. the token PIN (``kind`` = ``"smgw token"``)."""

    kind: str


@dataclass(frozen=True, slots=True)
class NeedOk:
    """``>NEED-OK:Need 'token-insertion-request' confirmation``: pkcs11-helper asks, after a
    soft restart, whether the token is present; unanswered, OpenVPN waits for ever."""

    kind: str


@dataclass(frozen=True, slots=True)
class PasswordFailed:
    kind: str


@dataclass(frozen=True, slots=True)
class Fatal:
    text: str


@dataclass(frozen=True, slots=True)
class ByteCount:
    received: int
    sent: int


@dataclass(frozen=True, slots=True)
class Log:
    flags: str
    text: str


@dataclass(frozen=True, slots=True)
class Reply:
    """``SUCCESS: ...`` or ``ERROR: ...`` to the last command."""

    ok: bool
    text: str


@dataclass(frozen=True, slots=True)
class Info:
    text: str


Event = State | Hold | PasswordNeeded | NeedOk | PasswordFailed | Fatal | ByteCount | Log | Reply | Info

_NEED = re.compile(r"Need '([^']{1,64})' (?:password|username/password)")
_FAILED = re.compile(r"Verification Failed: '([^']{1,64})'")
_NEED_OK = re.compile(r">NEED-OK:Need '([^']{1,64})' confirmation")


def quote(value: str) -> str:
    """One token for OpenVPN's parser: double quotes, with backslash and quote escaped."""
    if any(c in value for c in "\r\n\x00"):
        raise ManagementError("CR, LF and NUL cannot be sent over the management socket")
    if not value.isprintable():
        raise ManagementError("control characters cannot be sent over the management socket")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse(line: str) -> Event | None:
    if line.startswith(">STATE:"):
        fields = line[7:].split(",")
        fields += [""] * (5 - len(fields))
        return State(name=fields[1], detail=fields[2], local_ip=fields[3], remote_ip=fields[4])
    if line.startswith(">HOLD:"):
        return Hold(line[6:])
    if line.startswith(">PASSWORD:"):
        body = line[10:]
        need = _NEED.match(body)
        if need:
            return PasswordNeeded(need.group(1))
        failed = _FAILED.match(body)
        if failed:
            return PasswordFailed(failed.group(1))
        return Info(line)
    need_ok = _NEED_OK.match(line)
    if need_ok:
        return NeedOk(need_ok.group(1))
    if line.startswith(">FATAL:"):
        return Fatal(line[7:])
    if line.startswith(">BYTECOUNT:"):
        received, _, sent = line[11:].partition(",")
        try:
            return ByteCount(int(received), int(sent))
        except ValueError:
            raise ManagementError(f"bad BYTECOUNT line {line[:80]!r}") from None
    if line.startswith(">LOG:"):
        parts = line[5:].split(",", 2)
        return Log(flags=parts[1] if len(parts) > 1 else "", text=parts[2] if len(parts) > 2 else "")
    if line.startswith("SUCCESS:"):
        return Reply(True, line[8:].strip())
    if line.startswith("ERROR:"):
        return Reply(False, line[6:].strip())
    if line.startswith(">"):
        return Info(line)
    return None  # lines of a multi-line reply (ends with END): not used by the supervisor


class ManagementClient:
    """Buffers bytes into lines and lines into events; builds command bytes."""

    def __init__(self) -> None:
        self._buffer = b""

    def receive_data(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while b"\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n", 1)
            event = _parse(raw.rstrip(b"\r").decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
            raise ManagementError(f"management line longer than {MAX_LINE} bytes")
        return events

    @staticmethod
    def command(*words: str) -> bytes:
        """A command line; the first word is a bare verb, the rest are quoted."""
        verb, *args = words
        if not re.fullmatch(r"[a-z-]{1,32}", verb):
            raise ManagementError(f"not a management verb: {verb[:40]!r}")
        return (" ".join([verb, *(quote(a) for a in args)]) + "\n").encode()

    def start(self) -> bytes:
        """Real-time state and byte counts on, then let OpenVPN leave its hold."""
        return b"state on\nbytecount 5\nhold release\n"

    def password(self, kind: str, secret: str) -> bytes:
        return self.command("password", kind, secret)

    def need_ok(self, kind: str) -> bytes:
        return self.command("needok", kind, "ok")

    def signal(self, name: str) -> bytes:
        if name not in ("SIGHUP", "SIGTERM", "SIGUSR1", "SIGUSR2"):
            raise ManagementError(f"unknown signal {name!r}")
        return f"signal {name}\n".encode()
