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


class Node(tuple[bytes, int, int, int, int]):
    """One element: its identifier octet and where its header and body lie in ``data``. A
    tuple (data, ident, start, body_start, end), made by ``tuple.__new__`` without an
    ``__init__`` call: a delivery's two messages hold some 70 elements, and making them was
    a third of the walk."""

    __slots__ = ()

    @property
    def cls(self) -> int:
        return self[1] >> 6

    @property
    def tag(self) -> int:
        return self[1] & 0x1F

    @property
    def body(self) -> bytes:
        return self[0][self[3]:self[4]]

    @property
    def der(self) -> bytes:
        return self[0][self[2]:self[4]]


_node = tuple.__new__


def _make(data: bytes, ident: int, start: int, body_start: int, end: int) -> Node:
    return _node(Node, (data, ident, start, body_start, end))


def one(data: bytes, cls: int, tag: int, constructed: bool) -> Node:
    """``data`` is exactly one element with this class, tag and form."""
    elements = children(_make(data, 0x20, 0, 0, len(data)))  # as if data were a constructed body
    if len(elements) != 1:
        raise NotTheShape("not exactly one element: empty or trailing data")
    return expect(elements[0], cls, tag, constructed)


def children(node: Node) -> list[Node]:
    if not node[1] & 0x20:
        raise NotTheShape("primitive where constructed expected")
    data, _ident, _start, pos, limit = node
    out: list[Node] = []
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
        out.append(_node(Node, (data, ident, pos, body, end)))
        pos = end
    return out


def expect(node: Node, cls: int, tag: int, constructed: bool) -> Node:
    if node[1] != (cls << 6 | constructed << 5 | tag):
        raise NotTheShape(f"expected class {cls} tag {tag}")
    return node


def _primitive_body(node: Node, tag: int) -> bytes:
    """The body of a universal primitive element of ``tag`` (its identifier octet is the tag itself)."""
    data, ident, _start, body, end = node
    if ident != tag:
        raise NotTheShape(f"expected class {UNIVERSAL} tag {tag}")
    return data[body:end]


def integer(node: Node) -> int:
    body = _primitive_body(node, INTEGER)
    if not body:
        raise NotTheShape("empty INTEGER")
    return int.from_bytes(body, "big", signed=True)


def octets(node: Node) -> bytes:
    return _primitive_body(node, OCTET_STRING)


@cache
def oid_body(dotted: str) -> bytes:
    """The content octets of an OBJECT IDENTIFIER, to compare OIDs without decoding them."""
    return bytes(asn1_core.ObjectIdentifier(dotted).contents)


def oid(node: Node) -> bytes:
    return _primitive_body(node, OID)
