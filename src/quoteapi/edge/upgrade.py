"""The body of a request that asks to upgrade. httptools stops at its head; the Upgrade is ignored
(RFC 9110, section 7.8: there is no other protocol here), the request is served with its body, and
its answer closes the connection. A parser of its own reads that body, framed as the head said."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httptools

from quoteapi.edge.heads import Headers

if TYPE_CHECKING:
    from quoteapi.edge.reading import RequestReading

_FRAMING = (b"transfer-encoding", b"content-length")


def parser_past_upgrade(
    connection: RequestReading, headers: Headers
) -> httptools.HttpRequestParser:
    """A parser that hands `connection` the body and trailers of the request it has the head of."""
    framing = next(
        (name + b": " + value for name, value in headers if name in _FRAMING),
        b"content-length: 0",
    )
    parser = httptools.HttpRequestParser(_BodyPastUpgrade(connection))
    parser.feed_data(b"POST / HTTP/1.1\r\n%s\r\n\r\n" % framing)
    return parser


class _BodyPastUpgrade:
    """Parser callbacks: the head that frames the body is dropped, its body and trailers go to
    the connection, and nothing after it is read."""

    def __init__(self, connection: RequestReading) -> None:
        self.connection = connection
        self.head_done = False

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # a trailer field
            self.connection.on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self.connection.on_body(body)

    def on_chunk_header(self) -> None:
        self.connection.on_chunk_header()

    def on_chunk_complete(self) -> None:
        self.connection.on_chunk_complete()

    def on_message_complete(self) -> None:
        self.connection.on_message_complete()
        self.connection.drop()
