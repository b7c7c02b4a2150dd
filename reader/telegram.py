"""Pure parsers for what a meter sends: identification, data blocks, data messages.

Rules for a data set ``ADDRESS(value*unit)(...)``:
- brackets without an address belong to the address before them;
- the first bracket is the value; ``*`` splits off the unit, else ``number SPACE unit``;
- a decimal comma is read as a point; numbers become exact ``Decimal``;
- ``(ERROR)`` and ``()`` carry no value but a status;
- a second bracket that is a meter time becomes the reading's UTC timestamp; when the
  first bracket is a time and the second a number (DSMR gas style) the two swap;
- the end marker ``!`` may stand alone or be glued to the last line; LF-only line ends
  are accepted.
Anything else that is malformed raises ``ProtocolError`` naming the line and column.
"""

from __future__ import annotations

import re
from decimal import Decimal

from reader.errors import BlockCheckError, ProtocolError
from reader.frames import ETX, STX, bcc, crc16_dsmr, strip_parity
from reader.meter_time import DEFAULT_ZONE, parse_meter_time
from reader.models import Identification, Reading

NUMBER = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?\Z")
_ADDRESS_BAD = frozenset("()/!\x00")
MAX_VALUE_LEN = 128  # programming-mode values may be 128 chars; readout ones are shorter
MAX_ADDRESS_LEN = 32


def parse_identification(line: bytes | str) -> Identification:
    """``/XXXZ[\\W...]Ident`` (CR LF optional) into its parts."""
    text = line.decode("ascii", "replace") if isinstance(line, bytes) else line
    text = text.rstrip("\r\n")
    if not text.startswith("/") or len(text) < 5:
        raise ProtocolError(f"identification: expected '/XXXZ...', got {text[:40]!r}")
    body = text[1:]
    manufacturer = body[0:3]
    if not manufacturer.isalpha() or not manufacturer.isascii():
        raise ProtocolError(f"identification: manufacturer {manufacturer!r} is not three letters")
    baud_char = body[3]
    rest = body[4:]
    enhanced: list[str] = []
    while len(rest) >= 2 and rest[0] == "\\":
        enhanced.append(rest[1])
        rest = rest[2:]
    if not rest.isprintable() or len(rest) > 32:
        raise ProtocolError(f"identification: model text {rest[:40]!r} is not printable ASCII")
    return Identification(
        text=body, manufacturer=manufacturer, baud_char=baud_char,
        model=rest, enhanced=tuple(enhanced),
    )


def split_value(content: str) -> tuple[str, str | None]:
    star = content.rfind("*")
    if star >= 0:
        return content[:star], content[star + 1:] or None
    space = content.find(" ")
    if space > 0:
        number, unit = content[:space], content[space + 1:].strip()
        if unit and NUMBER.match(number):
            return number, unit
    return content, None


def _make_reading(address: str, brackets: list[str], zone_name: str) -> Reading:
    text, unit = split_value(brackets[0])
    timestamp = None
    extra: tuple[str, ...] = ()
    if len(brackets) > 1:
        second = brackets[1]
        timestamp = parse_meter_time(second, zone_name)
        if timestamp is None:
            first_time = parse_meter_time(text, zone_name) if unit is None else None
            if first_time is not None:
                value2, unit2 = split_value(second)
                if NUMBER.match(value2):
                    timestamp, text, unit = first_time, value2, unit2
                else:
                    extra = (second,)
            else:
                extra = (second,)
        extra = extra + tuple(brackets[2:])
    status: str | None = None
    value: Decimal | None = None
    if text == "":
        status = "empty"
    elif NUMBER.match(text):
        value = Decimal(text.replace(",", "."))
    elif text.upper() == "ERROR":
        status = "ERROR"
    return Reading(
        address=address, value=value, text=text, unit=unit,
        timestamp=timestamp, status=status, extra=extra,
    )


def parse_data_lines(text: str, *, zone_name: str = DEFAULT_ZONE) -> list[Reading]:
    """Parse the lines of a data block (without STX/ETX); stops at the ``!`` end marker."""
    readings: list[Reading] = []
    address: str | None = None
    brackets: list[str] = []
    ended = False
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if ended:
            if line.strip():
                raise ProtocolError(f"data line {lineno}: text after the end marker '!'")
            continue
        pos = 0
        end = len(line)
        while pos < end:
            opening = line.find("(", pos)
            if opening < 0:
                tail = line[pos:].strip()
                if tail == "!":
                    ended = True
                    break
                raise ProtocolError(
                    f"data line {lineno} col {pos + 1}: unexpected {tail[:20]!r} (no bracket)"
                )
            closing = line.find(")", opening)
            if closing < 0:
                raise ProtocolError(f"data line {lineno} col {opening + 1}: unclosed bracket")
            content = line[opening + 1:closing]
            if "(" in content or len(content) > MAX_VALUE_LEN or not content.isprintable():
                raise ProtocolError(
                    f"data line {lineno} col {opening + 2}: bad value {content[:20]!r}"
                )
            name = line[pos:opening]
            if name:
                if (len(name) > MAX_ADDRESS_LEN or not name.isprintable() or " " in name
                        or not _ADDRESS_BAD.isdisjoint(name)):
                    raise ProtocolError(
                        f"data line {lineno} col {pos + 1}: bad address {name[:20]!r}"
                    )
                if address is not None:
                    readings.append(_make_reading(address, brackets, zone_name))
                address, brackets = name, [content]
            elif address is None:
                raise ProtocolError(f"data line {lineno} col {opening + 1}: value without address")
            else:
                brackets.append(content)
            pos = closing + 1
    if address is not None:
        readings.append(_make_reading(address, brackets, zone_name))
    return readings


def split_block(block: bytes) -> tuple[bytes, int]:
    """Check a ``STX data ETX BCC`` (or ``... EOT BCC``) block; return (data, end char)."""
    if len(block) < 3 or block[0] != STX:
        raise ProtocolError("data block: does not start with STX")
    end = block[-2]
    if end not in (ETX, 0x04):
        raise ProtocolError("data block: no ETX/EOT before the BCC")
    if bcc(block[1:-1]) != block[-1] & 0x7F:
        raise BlockCheckError(
            f"data block: BCC mismatch (got 0x{block[-1] & 0x7F:02x}, "
            f"computed 0x{bcc(block[1:-1]):02x})"
        )
    return block[1:-2], end


def decode_text(data: bytes) -> str:
    """7-bit ASCII: a stray 8th bit is parity noise, not text."""
    return strip_parity(data).decode("ascii")


def parse_data_message(block: bytes, *, zone_name: str = DEFAULT_ZONE) -> list[Reading]:
    """A whole mode A-C data message ``STX ... ! CR LF ETX BCC``: BCC first, then lines."""
    data, _ = split_block(block)
    return parse_data_lines(decode_text(data), zone_name=zone_name)


def parse_telegram(raw: bytes, *, zone_name: str = DEFAULT_ZONE) -> tuple[Identification, list[Reading]]:
    """Identification line plus data: an STX/BCC message, or mode D text ending ``!`` [CRC]."""
    raw = strip_parity(raw)
    eol = raw.find(b"\n")
    if eol < 0:
        raise ProtocolError("telegram: no end of the identification line")
    ident = parse_identification(raw[:eol + 1])
    rest = raw[eol + 1:]
    stx = rest.find(bytes((STX,)))
    if stx >= 0 and not rest[:stx].strip():
        etx = rest.find(bytes((ETX,)), stx)
        if etx < 0 or etx + 1 >= len(rest):
            raise ProtocolError("telegram: data message without ETX and BCC")
        return ident, parse_data_message(rest[stx:etx + 2], zone_name=zone_name)
    bang = rest.rfind(b"!")
    if bang < 0:
        raise ProtocolError("telegram: no end marker '!'")
    crc_text = rest[bang + 1:].strip()
    if crc_text:
        if len(crc_text) != 4:
            raise ProtocolError(f"telegram: bad checksum field {crc_text[:8]!r} after '!'")
        try:
            expected = int(crc_text, 16)
        except ValueError:
            raise ProtocolError(f"telegram: bad checksum field {crc_text!r} after '!'") from None
        computed = crc16_dsmr(raw[: eol + 1 + bang + 1])
        if computed != expected:
            raise BlockCheckError(
                f"telegram: CRC mismatch (got {expected:04X}, computed {computed:04X})"
            )
    return ident, parse_data_lines(decode_text(rest[: bang + 1]), zone_name=zone_name)
