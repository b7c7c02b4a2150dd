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
_is_number = NUMBER.match
_new = tuple.__new__  # builds a Reading without its Python-level __new__ (hot path only)
MAX_VALUE_LEN = 2048  # IEC 62056-21 allows 128; DSMR text messages (96.13.0) carry up to 1024 hex pairs
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
    content = brackets[0]
    if len(brackets) == 1 and " " not in content:
        # the common case, kept lean: one bracket, value[*unit]
        star = content.rfind("*")
        if star >= 0:
            text, unit = content[:star], content[star + 1:] or None
        else:
            text, unit = content, None
        if _is_number(text):
            return Reading(address, Decimal(text.replace(",", ".") if "," in text else text), text, unit)
        return Reading(address, None, text, unit, None, _status(text))
    text, unit = split_value(content)
    timestamp = None
    extra: tuple[str, ...] = ()
    if len(brackets) > 1:
        second = brackets[1]
        timestamp = parse_meter_time(second, zone_name)
        if timestamp is None:
            first_time = parse_meter_time(text, zone_name) if unit is None else None
            if first_time is not None:
                value2, unit2 = split_value(second)
                if _is_number(value2):
                    timestamp, text, unit = first_time, value2, unit2
                else:
                    extra = (second,)
            else:
                extra = (second,)
        extra = extra + tuple(brackets[2:])
    if _is_number(text):
        return Reading(address, Decimal(text.replace(",", ".")), text, unit, timestamp, None, extra)
    return Reading(address, None, text, unit, timestamp, _status(text), extra)


def _status(text: str) -> str | None:
    """Why a value has no number: ``(ERROR)``, ``()``, or None for other text."""
    if text == "":
        return "empty"
    if text.upper() == "ERROR":
        return "ERROR"
    return None


# One data set: a name of printable ASCII without space ( ) / ! (at most 32), then a bracket
# of printable ASCII without ( ) (at most 128). Whatever does not match is a gap that must
# be line ends only; the error path then works out what exactly was wrong, and where.
_NAME = r"[\x22-\x27\x2a-\x2e\x30-\x7e]{0,%d}" % MAX_ADDRESS_LEN  # noqa: UP031  # braces are regex here
_VALUE = r"[\x20-\x27\x2a-\x7e]"
# One data set, with the plain number[*unit] split off by the regex engine itself; or the
# end marker; or any other single character, which makes the block invalid. Line ends are
# the only thing left unmatched. ``findall`` then hands Python plain tuples, no match objects.
_TOKEN = re.compile(
    r"(%s)\((?:([+-]?[0-9]+(?:\.[0-9]+)?)(?:\*(%s*))?\)|(%s{0,%d})\))|(!)|([^\r\n])"  # noqa: UP031
    % (_NAME, _VALUE, _VALUE, MAX_VALUE_LEN)
)
_SPAN = re.compile(r"(%s)\(%s{0,%d}\)" % (_NAME, _VALUE, MAX_VALUE_LEN))  # noqa: UP031


def _where(text: str, index: int) -> str:
    """``data line L col C`` of a character index, computed only on the error path."""
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"data line {line} col {col}"


def _gap_error(text: str, start: int, end: int, *, before_token: bool) -> ProtocolError:
    """Explain the text between two data sets (or after the last) that is not a line end."""
    gap = text[start:end]
    offset = len(gap) - len(gap.lstrip())
    at = start + offset
    body = gap.strip()
    if body.startswith("!"):
        return ProtocolError(f"{_where(text, at)}: text after the end marker '!'")
    bracket = gap.find("(")
    if bracket >= 0:
        eol = gap.find("\n", bracket)
        line_rest = gap[bracket + 1:eol if eol >= 0 else len(gap)]
        closing = line_rest.find(")")
        nested = line_rest.find("(")
        if closing < 0 or (0 <= nested < closing):
            return ProtocolError(f"{_where(text, start + bracket)}: unclosed bracket")
        name = gap[:bracket].strip()
        value = line_rest[:closing]
        if len(name) > MAX_ADDRESS_LEN or not _ADDRESS_OK.fullmatch(name):
            return ProtocolError(f"{_where(text, at)}: bad address {name[:20]!r}")
        return ProtocolError(f"{_where(text, start + bracket + 1)}: bad value {value[:20]!r}")
    if body.startswith(")"):
        return ProtocolError(f"{_where(text, at)}: bad value (unbalanced ')')")
    if before_token:
        return ProtocolError(f"{_where(text, at)}: bad address starting {body[:20]!r}")
    return ProtocolError(f"{_where(text, at)}: unexpected {body[:20]!r} (no bracket)")


_ADDRESS_OK = re.compile(r"[\x22-\x27\x2a-\x2e\x30-\x7e]*")


def parse_data_lines(text: str, *, zone_name: str = DEFAULT_ZONE) -> list[Reading]:
    """Parse the lines of a data block (without STX/ETX) up to the ``!`` end marker.

    One C-level regex pass tokenises and validates the whole block and already splits the
    common ``number*unit``; Python sees plain tuples. Anything the pass flags goes to
    ``_explain`` for a message with line and column.
    """
    readings: list[Reading] = []
    append = readings.append
    address = ""
    number = ""  # the current data set's value, when it is a plain number
    unit: str | None = None
    brackets: list[str] = []
    ended = False
    for name, num, num_unit, other, bang, bad in _TOKEN.findall(text):
        if bad or ended:
            raise _explain(text)
        if bang:
            ended = True
            continue
        if name:
            if address:
                if number and len(brackets) == 1:
                    append(_new(Reading, (address, Decimal(number), number, unit, None, None, ())))
                else:
                    append(_make_reading(address, brackets, zone_name))
            address, number, unit = name, num, num_unit or None
            brackets = [num + "*" + num_unit if num_unit else num or other]
        elif not address:
            raise _explain(text)
        else:
            brackets.append(num + "*" + num_unit if num_unit else num or other)
    if address:
        if number and len(brackets) == 1:
            append(_new(Reading, (address, Decimal(number), number, unit, None, None, ())))
        else:
            append(_make_reading(address, brackets, zone_name))
    return readings


def _explain(text: str) -> ProtocolError:
    """The slow path: walk the block data set by data set to say what is wrong, where."""
    pos = 0
    seen_address = False
    for match in _SPAN.finditer(text):
        start = match.start()
        if start != pos and not text[pos:start].isspace():
            return _gap_error(text, pos, start, before_token=True)
        if not match.group(1) and not seen_address:
            return ProtocolError(f"{_where(text, start)}: value without address")
        seen_address = True
        pos = match.end()
    return _gap_error(text, pos, len(text), before_token=False)


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
