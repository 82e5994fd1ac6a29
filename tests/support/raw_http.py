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


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The next response head on `reader`: its status and its headers (names lower-cased)."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = dict(line.split(":", 1) for line in lines[1:] if line)
    return status, {name.strip().lower(): value.strip() for name, value in headers.items()}


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """The next whole response on `reader` (framed by Content-Length): status, headers, body."""
    status, headers = await read_head(reader)
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))
