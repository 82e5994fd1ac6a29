"""HTTP over a bare TCP socket, for tests that control exactly how request bytes are framed."""

from __future__ import annotations

import asyncio


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


def split_responses(received: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in `received`, in order: status, headers (lower-cased names), body. Each
    must carry Content-Length (or have no body: 204, 304)."""
    responses = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        responses.append((int(status_line.split()[1]), headers, rest[:length]))
        received = rest[length:]
    return responses
