"""Meter-side byte builders for tests (independent of the client's parser)."""

from __future__ import annotations

from functools import reduce
from operator import xor


def bcc_of(body: bytes) -> bytes:
    return bytes((reduce(xor, body, 0) & 0x7F,))


def data_message(lines: list[str], *, glued: bool = False, eol: str = "\r\n") -> bytes:
    text = eol.join(lines) + ("!" + eol if glued else eol + "!" + eol)
    body = text.encode("ascii") + b"\x03"
    return b"\x02" + body + bcc_of(body)


def block(text: str, *, end: bytes = b"\x03") -> bytes:
    body = text.encode("ascii") + end
    return b"\x02" + body + bcc_of(body)


def soh_command(cmd: str, data: str | None = None) -> bytes:
    body = cmd.encode() + ((b"\x02" + data.encode()) if data is not None else b"") + b"\x03"
    return b"\x01" + body + bcc_of(body)


def corrupt(message: bytes) -> bytes:
    return message[:-1] + bytes(((message[-1] ^ 0x01) & 0x7F,))
