"""HTTP over a bare TCP socket, for tests that control exactly how request bytes are framed or
must see every byte of the answer (a HEAD's answer is its head and nothing more)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import NamedTuple


async def exchange(port: int, *writes: bytes, apart_s: float = 0.0) -> bytes:
    """Send each write `apart_s` after the previous one on a new connection to 127.0.0.1:`port`;
    everything the server answers until it closes. A reset is raised, never swallowed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i, data in enumerate(writes):
            if i:
                await asyncio.sleep(apart_s)
            writer.write(data)
            await writer.drain()
        received = b""
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += chunk
        return received
    finally:
        writer.close()


def request_bytes(method: str, path: str, headers: Mapping[str, str] | None = None) -> bytes:
    """An HTTP/1.1 request without a body, asking the server to close after answering."""
    fields = {"Host": "quoteapi.test", "Connection": "close", **(headers or {})}
    lines = [f"{method} {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class RawResponse(NamedTuple):
    """One response as it came off the wire."""

    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def parse_response(answer: bytes) -> RawResponse:
    """The one response in `answer` (what `exchange` returned), with every byte after its head
    as its body, as sent."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return RawResponse(*_parse_head(head), body)


def split_responses(received: bytes) -> list[RawResponse]:
    """The responses in `received`, in order. Each must carry Content-Length (or have no body:
    204, 304)."""
    responses = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        status, headers = _parse_head(head)
        length = int(headers.get("content-length", "0"))
        responses.append(RawResponse(status, headers, rest[:length]))
        received = rest[length:]
    return responses


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The next response head on `reader`: its status and its headers (names lower-cased)."""
    return _parse_head((await reader.readuntil(b"\r\n\r\n"))[:-4])


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """The next whole response on `reader` (framed by Content-Length)."""
    status, headers = await read_head(reader)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(status, headers, body)
