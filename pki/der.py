"""A strict DER walk for the headend's hot path.

asn1crypto's object model builds a Python object per field and resolves every OID by name;
on a 2 kB delivery that costs more than the ECDSA verification itself, and even its
tokenizer (``asn1crypto.parser``) cost a third of a verify+decrypt, slicing every element's
header and body out as new bytes. The CMS readers walk the one shape they expect with these
few helpers instead, over offsets into the message, and fall back to the full asn1crypto
model for anything else, which then also gives the precise error. So this module only ever
says "exactly this, or ``NotTheShape``"; it decides nothing on its own. It reads DER only
(definite, minimal lengths, low tag numbers): BER and anything odd is not the shape.
Whatever the fast path accepts, the full model must read the same: tests/unit/
test_cms_fast_path.py and tests/fuzz/fuzz_cms.py check exactly that.
"""

from __future__ import annotations

from functools import cache

from asn1crypto import core as asn1_core

UNIVERSAL, CONTEXT = 0, 2
INTEGER, BIT_STRING, OCTET_STRING, OID, SEQUENCE, SET = 2, 3, 4, 6, 16, 17
_MAX_LENGTH_OCTETS = 4  # a 4 GiB element: more than any message the ingest accepts


class NotTheShape(ValueError):
    """Not the exact DER shape the fast path reads: use the full decoder."""


class Node:
    """One element: its identifier octet and where its header and body lie in ``data``."""

    __slots__ = ("body_start", "data", "end", "ident", "start")

    def __init__(self, data: bytes, ident: int, start: int, body_start: int, end: int) -> None:
        self.data, self.ident, self.start, self.body_start, self.end = data, ident, start, body_start, end

    @property
    def cls(self) -> int:
        return self.ident >> 6

    @property
    def tag(self) -> int:
        return self.ident & 0x1F

    @property
    def body(self) -> bytes:
        return self.data[self.body_start:self.end]

    @property
    def der(self) -> bytes:
        return self.data[self.start:self.end]


def one(data: bytes, cls: int, tag: int, constructed: bool) -> Node:
    """``data`` is exactly one element with this class, tag and form."""
    elements = children(Node(data, 0x20, 0, 0, len(data)))  # as if data were a constructed body
    if len(elements) != 1:
        raise NotTheShape("not exactly one element: empty or trailing data")
    return expect(elements[0], cls, tag, constructed)


def children(node: Node) -> list[Node]:
    if not node.ident & 0x20:
        raise NotTheShape("primitive where constructed expected")
    out, data, pos, limit = [], node.data, node.body_start, node.end
    while pos < limit:  # one loop, no call per element: this is most of the fast path's time
        if pos + 2 > limit:
            raise NotTheShape("truncated header")
        ident, length = data[pos], data[pos + 1]
        if ident & 0x1F == 0x1F:
            raise NotTheShape("high tag number")
        body = pos + 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0:
                raise NotTheShape("indefinite length")
            if count > _MAX_LENGTH_OCTETS or body + count > limit:
                raise NotTheShape("length octets")
            length = int.from_bytes(data[body:body + count], "big")
            if length < 0x80 or data[body] == 0:
                raise NotTheShape("non-minimal length")
            body += count
        end = body + length
        if end > limit:
            raise NotTheShape("truncated body")
        out.append(Node(data, ident, pos, body, end))
        pos = end
    return out


def expect(node: Node, cls: int, tag: int, constructed: bool) -> Node:
    if node.ident != (cls << 6 | constructed << 5 | tag):
        raise NotTheShape(f"expected class {cls} tag {tag}")
    return node


def integer(node: Node) -> int:
    expect(node, UNIVERSAL, INTEGER, False)
    if node.end == node.body_start:
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
