"""What a request head must be before any app sees it, what it says of its body, and the parser
of the body past an Upgrade (header fields as uvicorn collects them, names lower-cased)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from quoteapi.edge.reading import RequestReading

Headers = list[tuple[bytes, bytes]]

# RFC 3986's host [ ":" port ]: an IP literal in brackets, or a reg-name (unreserved,
# percent-encoded and sub-delims characters; an IPv4 address is one too), then digits.
_HOST = re.compile(
    rb"(\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(:[0-9]*)?"
)
_FRAMING = (b"transfer-encoding", b"content-length")


def host_problem(http_version: str, headers: Headers) -> str | None:
    """Why the request's Host header breaks RFC 9112 section 3.2, or None: an HTTP/1.1 request
    carries exactly one, any request at most one (two could route it two ways), and its value is
    a host and port (RFC 3986), nothing else."""
    hosts = [value for name, value in headers if name == b"host"]
    if len(hosts) > 1:
        return f"Send one Host header; this request has {len(hosts)} (RFC 9112, section 3.2)."
    if not hosts and http_version == "1.1":
        return "An HTTP/1.1 request must carry a Host header (RFC 9112, section 3.2)."
    if hosts and _HOST.fullmatch(hosts[0]) is None:
        return "The Host header must be a host name or address and a port (RFC 9112, 3.2)."
    return None


def coding_problem(headers: Headers) -> str | None:
    """Why the request's Transfer-Encoding is refused (RFC 9112, section 6.1: any coding but
    `chunked` is 501), or None."""
    codings = [
        coding.strip().lower()
        for name, value in headers
        if name == b"transfer-encoding"
        for coding in value.split(b",")
    ]
    if any(coding != b"chunked" for coding in codings):
        return "Only the chunked transfer coding is accepted; send the body without others."
    return None


def has_body(headers: Headers) -> bool:
    return any(
        (name == b"content-length" and value.strip() not in (b"0", b""))
        or name == b"transfer-encoding"
        for name, value in headers
    )


def parser_past_upgrade(
    connection: RequestReading, headers: Headers
) -> httptools.HttpRequestParser:
    """httptools stops at the head of a request that asks to upgrade. The Upgrade is ignored (RFC
    9110, section 7.8: there is no other protocol here): this parser hands `connection` the
    request's body and trailers, framed as its head said, and reads nothing after them."""
    framing = next(
        (name + b": " + value for name, value in headers if name in _FRAMING),
        b"content-length: 0",
    )
    parser = httptools.HttpRequestParser(_BodyPastUpgrade(connection))
    parser.feed_data(b"POST / HTTP/1.1\r\n%s\r\n\r\n" % framing)
    return parser


class _BodyPastUpgrade:
    def __init__(self, connection: RequestReading) -> None:
        self.connection = connection
        self.head_done = False  # the head that frames the body is dropped
        self.on_body = connection.on_body
        self.on_chunk_header = connection.on_chunk_header
        self.on_chunk_complete = connection.on_chunk_complete

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # a trailer field
            self.connection.on_header(name, value)

    def on_message_complete(self) -> None:
        self.connection.on_message_complete()
        self.connection.drop()
