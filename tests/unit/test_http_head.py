"""The ingest's request heads (headend/http_head.py): where a head ends, what is read of it,
and the heads refused, each with its status."""

from __future__ import annotations

import pytest

from headend.http_head import HeadRefused, head_end, parse_head

GOOD = b"POST /v1/deliveries HTTP/1.1\r\nHost: headend\r\nContent-Type: application/cms\r\nContent-Length: 2088\r\n\r\n"


def test_a_delivery_head_is_read() -> None:
    head = parse_head(GOOD)
    assert (head.method, head.target, head.length, head.chunked, head.keep_alive) == (
        b"POST", b"/v1/deliveries", 2088, False, True)


def test_the_head_ends_at_the_first_blank_line_and_only_within_the_limit() -> None:
    body = b"\r\n\r\nnot a head"
    assert head_end(GOOD + body, 0, 1000) == len(GOOD)
    assert head_end(GOOD[:-2], 0, 1000) == -1  # not there yet
    assert head_end(GOOD, 0, len(GOOD) - 1) == -1  # past the limit: not looked for
    # searched on from where the last search ended, less the 3 bytes a blank line reaches back
    assert head_end(GOOD, len(GOOD) - 2 - 3, 1000) == len(GOOD)


@pytest.mark.parametrize("start", [0, 12, 15])
def test_a_bare_lf_is_refused_as_soon_as_it_arrives(start: int) -> None:
    with pytest.raises(HeadRefused) as refused:
        head_end(b"POST / HTTP/1.1\nHost", start, 1000)  # (its LF is at 15)
    assert (refused.value.status, "bare LF" in refused.value.reason) == (400, True)
    assert head_end(b"POST / HTTP/1.1\r\nHost", 16, 1000) == -1  # a CRLF split by the start is no bare LF


@pytest.mark.parametrize(("extra", "keep_alive"), [
    (b"", True),
    (b"Connection: close\r\n", False),
    (b"Connection: keep-alive, Close\r\n", False),
])
def test_keep_alive_follows_the_connection_header(extra: bytes, keep_alive: bool) -> None:
    assert parse_head(GOOD.replace(b"\r\n\r\n", b"\r\n" + extra + b"\r\n")).keep_alive is keep_alive


def test_http_1_0_closes_even_when_it_asks_to_keep_alive() -> None:
    old = GOOD.replace(b"HTTP/1.1", b"HTTP/1.0")
    assert parse_head(old).keep_alive is False
    assert parse_head(old.replace(b"\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n")).keep_alive is False
    assert parse_head(old.replace(b"Host: headend\r\n", b"")).method == b"POST"  # Host is 1.1's rule


def test_transfer_encoding_is_seen_and_no_content_length_is_none() -> None:
    head = parse_head(b"POST /v1/deliveries HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert (head.chunked, head.length) == (True, None)


@pytest.mark.parametrize(("head", "status", "reason"), [
    (GOOD.replace(b"\r\n", b"\n"), 400, ""),  # bare LF
    (GOOD.replace(b"Host: headend\r\n", b"Host: headend\r\n folded\r\n"), 400, ""),  # obs-fold
    (GOOD.replace(b"Host:", b"Host :"), 400, ""),  # space before the colon
    (GOOD.replace(b"headend", b"head\x01end"), 400, ""),  # a control character in a value
    (GOOD.replace(b"headend", b"head\x7fend"), 400, ""),
    (GOOD.replace(b"/v1/deliveries", b"/v1/deli\x00veries"), 400, ""),
    (GOOD.replace(b"2088", b"+2088"), 400, ""),
    (GOOD.replace(b"2088", b"99999999999999999999999"), 400, ""),
    (GOOD.replace(b"\r\n\r\n", b"\r\nContent-Length: 2088\r\n\r\n"), 400, "Duplicate Content-Length"),
    (GOOD.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n"), 400, "Transfer-Encoding"),
    (GOOD.replace(b"\r\n\r\n", b"\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"), 400, "upgrades"),
    (GOOD.replace(b"HTTP/1.1", b"HTTP/2.0"), 505, "HTTP/1.1 only"),
    (GOOD.replace(b"HTTP/1.1", b"RTSP/1.0"), 400, "not an HTTP request line"),  # llhttp reads RTSP too
    (GOOD.replace(b"HTTP/1.1", b"HTTP/1.2"), 400, ""),
    (GOOD.replace(b"HTTP/1.1", b"HTTP/1.1 "), 400, ""),
    (GOOD.replace(b"FOO", b"").replace(b"POST", b"FOO"), 400, ""),  # no such method
    (GOOD.replace(b"Host: headend\r\n", b""), 400, "Host exactly once"),
    (GOOD.replace(b"Host: headend\r\n", b"Host: a\r\nHost: b\r\n"), 400, "Host exactly once"),
    (b"POST /v1/deliveries HTTP/1.1\r\nHost: h\n\r\n", 400, ""),  # mixed line ends
    (b"\r\n\r\n", 400, "does not end at its blank line"),
])
def test_heads_that_are_not_requests_are_refused_with_a_status(head: bytes, status: int, reason: str) -> None:
    with pytest.raises(HeadRefused) as refused:
        parse_head(head)
    assert refused.value.status == status and reason in refused.value.reason
    assert refused.value.reason  # always says why
