"""An HTTP/1.1 request head (the request line and its headers), read by llhttp through httptools.

The ingest frames a request itself, which takes two rules: the head ends at the first blank
line, CRLF CRLF (``head_end``), the body is Content-Length bytes after it (the ingest refuses every
request without one, and every one with Transfer-Encoding). Everything between, the
grammar of the request line and of each header, is llhttp's (Node.js's parser, in C, fuzzed
by that project), run strict: no bare LF, no obs-fold, no space before a colon, no control
character in a value, no Content-Length given twice or beside Transfer-Encoding. What the
two disagree on is refused: a head llhttp does not finish where the blank line is, is
malformed.

Why not h11, which the ingest used before and the gateway's admin API still uses: h11 is
pure Python and took about 50 us of the ~600 us one delivery costs the ingest (bench/
headend.py), the most of anything that is not cryptography; llhttp reads the same head in
about 3 us. The functions here are pure: bytes in, a ``RequestHead`` or ``HeadRefused`` out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httptools

#: the blank line that ends a head, or a bare LF (which llhttp refuses: refused at once, not
#: waited on until the head's size or the request's deadline)
_END_OR_BARE_LF = re.compile(rb"\r\n\r\n|(?<!\r)\n")


class HeadRefused(Exception):
    """A head that is not a request the ingest reads: the status to answer and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: bytes
    target: bytes
    lengths: tuple[bytes, ...]  #: every Content-Length value (llhttp admits one, of digits)
    chunked: bool  #: a Transfer-Encoding header is present
    keep_alive: bool  #: another request may follow on the connection (HTTP/1.1 without "close", ...)

    @property
    def length(self) -> int | None:
        """The body's length, or None if the request gives none."""
        return int(self.lengths[0]) if self.lengths else None


def head_end(buffer: bytes | bytearray, start: int, limit: int) -> int:
    """The index just past the blank line ending the head at the start of ``buffer``; -1 if
    it is not there yet; ``HeadRefused`` at a bare LF. The search begins at ``start``, where
    the last one ended less the 3 bytes a blank line may reach back (so a head trickled a
    byte at a time costs its length, not its length squared), and ends at ``limit`` (the
    head's bound)."""
    found = _END_OR_BARE_LF.search(buffer, start, limit)
    if found is None:
        return -1
    if found.end() - found.start() == 1:
        raise HeadRefused(400, "a line ends in a bare LF (HTTP/1.1 lines end in CRLF)")
    return found.end()


class _Seen:
    """httptools' callbacks: what the ingest reads of a head."""

    __slots__ = ("chunked", "complete", "hosts", "lengths", "url")

    def __init__(self) -> None:
        self.url = b""
        self.lengths: list[bytes] = []
        self.chunked = False
        self.hosts = 0
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.lengths.append(value.strip(b" \t"))
        elif name == b"transfer-encoding":
            self.chunked = True
        elif name == b"host":
            self.hosts += 1

    def on_headers_complete(self) -> None:
        self.complete = True


def parse_head(head: bytes) -> RequestHead:
    """``head``, through its blank line (see ``head_end``), or ``HeadRefused``."""
    seen = _Seen()
    parser = httptools.HttpRequestParser(seen)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        raise HeadRefused(400, "protocol upgrades are not spoken here") from None
    except httptools.HttpParserError as exc:
        raise HeadRefused(400, str(exc) or type(exc).__name__) from None
    if not seen.complete:  # llhttp wants more than the blank line we found: not a head we agree on
        raise HeadRefused(400, "the request head does not end at its blank line")
    version = parser.get_http_version()
    if version not in ("1.0", "1.1"):
        raise HeadRefused(505, f"HTTP/1.1 only, not {version}")
    # llhttp reads RTSP and ICE request lines too, and names only their version's numbers
    if not head.lstrip(b"\r\n").split(b"\r\n", 1)[0].endswith(b" HTTP/" + version.encode()):
        raise HeadRefused(400, "not an HTTP request line")
    if version == "1.1" and seen.hosts != 1:  # RFC 9112 3.2: exactly one Host in HTTP/1.1
        raise HeadRefused(400, "an HTTP/1.1 request names its Host exactly once")
    # HTTP/1.0 closes after its answer, "Connection: keep-alive" or not: that keep-alive wants
    # the answer to say so, and no gateway speaks 1.0
    keep_alive = version == "1.1" and parser.should_keep_alive()
    return RequestHead(method=parser.get_method(), target=seen.url, lengths=tuple(seen.lengths),
                       chunked=seen.chunked, keep_alive=keep_alive)
