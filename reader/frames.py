"""Wire-level constants and block checks of IEC 62056-21.

Pure functions over bytes; the hot ones avoid per-byte Python work where the
standard library offers a C loop (``bytes.translate``).
"""

from __future__ import annotations

from functools import reduce
from operator import xor

SOH = 0x01
STX = 0x02
ETX = 0x03
EOT = 0x04
ACK = 0x06
NAK = 0x15
CR = 0x0D
LF = 0x0A
CRLF = b"\r\n"

#: Baud-rate characters of the identification message.
MODE_C_BAUD: dict[str, int] = {
    "0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200,
}
MODE_B_BAUD: dict[str, int] = {
    "A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200,
}
INITIAL_BAUD = 300
MODE_D_BAUD = 2400

_STRIP_PARITY = bytes(b & 0x7F for b in range(256))
_ADD_EVEN_PARITY = bytes(
    (b & 0x7F) | (0x80 if (b & 0x7F).bit_count() % 2 else 0) for b in range(256)
)


def strip_parity(data: bytes) -> bytes:
    """Drop bit 7: a 7E1 character read through a port opened 8N1 carries parity there."""
    return data.translate(_STRIP_PARITY)


def add_even_parity(data: bytes) -> bytes:
    """Encode 7E1 characters for a port that can only be opened 8N1 (same 10-bit frame)."""
    return data.translate(_ADD_EVEN_PARITY)


def bcc(data: bytes) -> int:
    """Block check character: XOR of the 7-bit characters (after SOH/STX, through ETX/EOT).

    Folds the block as one big integer (a few C-level XORs instead of one Python step per
    byte): the low byte of the fold is the XOR of all bytes.
    """
    n = len(data)
    if n < 16:
        return reduce(xor, data, 0) & 0x7F
    width = 1 << (n - 1).bit_length()  # bytes, a power of two >= n
    x = int.from_bytes(data, "little")
    bits = width * 8
    while bits > 8:  # no masking needed: only the low byte is read, and it stays exact
        bits >>= 1
        x ^= x >> bits
    return x & 0x7F


def with_bcc(body: bytes) -> bytes:
    """``body`` starts with SOH or STX; the BCC covers what follows it."""
    return body + bytes((bcc(body[1:]),))


def command(cmd: str, data: str | None = None) -> bytes:
    """A programming-mode command message: SOH C D [STX data] ETX BCC (e.g. P1, R5, B0)."""
    if data is None:
        return with_bcc(b"\x01" + cmd.encode("ascii") + b"\x03")
    return with_bcc(b"\x01" + cmd.encode("ascii") + b"\x02" + data.encode("ascii") + b"\x03")


def crc16_dsmr(data: bytes) -> int:
    """CRC-16/ARC (poly 0xA001 reflected, init 0) as mode D P1 telegrams carry after ``!``."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc
