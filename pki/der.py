"""A strict DER walk over asn1crypto's tokenizer, for the headend's hot path.

asn1crypto's object model builds a Python object per field and resolves every OID by name;
on a 2 kB delivery that costs more than the ECDSA verification itself. The CMS readers walk
the one shape they expect with these few helpers instead and fall back to the full
asn1crypto model for anything else, which then also gives the precise error. So this
module only ever says "exactly this, or ``NotTheShape``"; it decides nothing on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from asn1crypto import core as asn1_core
from asn1crypto.parser import _parse as _tlv

UNIVERSAL, CONTEXT = 0, 2
INTEGER, BIT_STRING, OCTET_STRING, OID, SEQUENCE, SET = 2, 3, 4, 6, 16, 17


class NotTheShape(ValueError):
    """Not the exact DER shape the fast path reads: use the full decoder."""


@dataclass(frozen=True, slots=True)
class Node:
    cls: int
    constructed: bool
    tag: int
    header: bytes
    body: bytes

    @property
    def der(self) -> bytes:
        return self.header + self.body


def _at(data: bytes, pointer: int) -> tuple[Node, int]:
    """The element at ``pointer`` and where the next one starts. ``_parse`` is the tokenizer
    behind asn1crypto's public ``parse``/``peek``; called directly it reads each element
    once instead of twice, which is most of the fast path's cost."""
    try:
        (cls, method, tag, header, body, trailer), end = _tlv(data, len(data), pointer)
    except (ValueError, TypeError):
        raise NotTheShape("not a DER element") from None
    if header[0] & 0x1F == 0x1F:
        raise NotTheShape("high tag number")
    if trailer or header[1] == 0x80:  # indefinite length: BER, not DER
        raise NotTheShape("indefinite length")
    if header[1] & 0x80 and (len(body) < 0x80 or header[2] == 0):
        raise NotTheShape("non-minimal length")
    return Node(cls, bool(method), tag, header, body), end


def one(data: bytes, cls: int, tag: int, constructed: bool) -> Node:
    """``data`` is exactly one element with this class, tag and form."""
    node, end = _at(data, 0)
    if end != len(data):
        raise NotTheShape("trailing data")
    return expect(node, cls, tag, constructed)


def children(node: Node) -> list[Node]:
    if not node.constructed:
        raise NotTheShape("primitive where constructed expected")
    out, data, pos = [], node.body, 0
    while pos < len(data):
        child, pos = _at(data, pos)
        out.append(child)
    return out


def expect(node: Node, cls: int, tag: int, constructed: bool) -> Node:
    if (node.cls, node.tag, node.constructed) != (cls, tag, constructed):
        raise NotTheShape(f"expected class {cls} tag {tag}")
    return node


def integer(node: Node) -> int:
    expect(node, UNIVERSAL, INTEGER, False)
    if not node.body:
        raise NotTheShape("empty INTEGER")
    return int.from_bytes(node.body, "big", signed=True)


def octets(node: Node) -> bytes:
    return expect(node, UNIVERSAL, OCTET_STRING, False).body


@cache
def oid_body(dotted: str) -> bytes:
    """The content octets of an OBJECT IDENTIFIER, to compare OIDs without decoding them."""
    return bytes(asn1_core.ObjectIdentifier(dotted).contents)


def oid(node: Node) -> bytes:
    return expect(node, UNIVERSAL, OID, False).body
