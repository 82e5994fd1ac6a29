"""A client that takes none of its pending answer for QUOTEAPI_WRITE_TIMEOUT_SECONDS is cut off,
against a real `quoteapi serve` over raw sockets: connections that ask for large answers and
never read them do not hold the worker's connections and buffers for good, and the cut is
logged as `write_timeout`. A client that reads slowly but steadily is not cut off: the deadline
bounds a stall, not the whole answer."""

from __future__ import annotations

import asyncio
import socket
import time

import psutil
import pytest

from tests.support.polling import wait_until
from tests.support.processes import ServerProcess, serve_fixture
from tests.support.raw_http import read_head

pytestmark = pytest.mark.slow

WRITE_TIMEOUT_S = 2.0
LATE_S = 6.0  # timers fire late on a loaded 2-core machine, and the deadline starts at a stall
BUNDLE = "/docs/assets/swagger-ui-bundle.js"  # about 1.5 MB
GET_BUNDLE = f"GET {BUNDLE} HTTP/1.1\r\nHost: quoteapi.test\r\n\r\n".encode()
# The server's kernel send buffer grows to a few MB on loopback and takes a whole answer: four
# answers of 1.5 MB are more than it takes, so that the server itself holds output the client
# has not taken. The client's receive buffer is small, so that it swallows little unread.
PIPELINED = 4
RECEIVE_BUFFER = 16 * 1024
NEVER_READING = 20


server = serve_fixture(
    quoteapi_write_timeout_seconds=WRITE_TIMEOUT_S,
    quoteapi_shutdown_grace_seconds=1,
)


def small_buffer_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    return sock


def established_from(server: ServerProcess, client_ports: set[int]) -> set[int]:
    """Which of `client_ports` the worker holds an ESTABLISHED connection from."""
    assert server.process is not None
    worker = psutil.Process(server.process.pid)
    connections = getattr(worker, "net_connections", worker.connections)(kind="tcp")
    return {
        c.raddr.port
        for c in connections
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port in client_ports
    }


def test_connections_that_never_read_their_answers_are_cut_at_the_write_deadline_quietly(
    server: ServerProcess,
) -> None:
    clients = [small_buffer_socket() for _ in range(NEVER_READING)]
    try:
        for sock in clients:
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(GET_BUNDLE * PIPELINED)  # 6 MB of answers, none ever read
        ports = {sock.getsockname()[1] for sock in clients}
        wait_until(
            lambda: established_from(server, ports) == ports,
            within=5,
            what="the worker holding every connection",
        )

        took = wait_until(
            lambda: not established_from(server, ports),
            within=WRITE_TIMEOUT_S + LATE_S,
            what=f"the worker dropping the {NEVER_READING} connections that read nothing",
        )
        print(f"\nall {NEVER_READING} cut {took:.2f} s after they were established")
    finally:
        for sock in clients:
            sock.close()
    wait_until(lambda: server.logged_event("write_timeout"), within=2, what="write_timeout logged")
    # The apps still sending found their clients gone: no error, no traceback.
    assert not [r for r in server.log_records() if r["level"] in ("error", "critical")]


async def read_steadily(
    reader: asyncio.StreamReader, length: int, chunk_bytes: int, every_s: float
) -> bytes:
    """Up to `length` bytes, `chunk_bytes` every `every_s`; fewer if the server closes the
    connection first."""
    received = bytearray()
    while len(received) < length:
        try:
            chunk = await asyncio.wait_for(
                reader.read(min(chunk_bytes, length - len(received))), 10
            )
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        received += chunk
        await asyncio.sleep(every_s)  # the client's pace, not a wait
    return bytes(received)


@pytest.mark.parametrize(
    ("answers", "chunk_bytes", "every_s"),
    [
        # One answer at 256 KiB/s: some 6 s, though the kernel's buffers may take all of it.
        (1, 64 * 1024, 0.25),
        # Four at 2 MiB/s: some 3 s, and the server holds what the kernel's buffers cannot take.
        (PIPELINED, 256 * 1024, 0.125),
    ],
    ids=["one-answer", "four-pipelined-answers"],
)
async def test_a_client_reading_slowly_but_steadily_receives_every_answer(
    server: ServerProcess, answers: int, chunk_bytes: int, every_s: float
) -> None:
    sock = small_buffer_socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    # A stream buffer that holds a whole chunk: each read takes `chunk_bytes` if they arrived.
    reader, writer = await asyncio.open_connection(sock=sock, limit=chunk_bytes)
    started = time.monotonic()
    try:
        writer.write(GET_BUNDLE * answers)
        for answer in range(1, answers + 1):
            status, headers = await asyncio.wait_for(read_head(reader), 10)
            assert status == 200
            length = int(headers["content-length"])
            body = await read_steadily(reader, length, chunk_bytes, every_s)
            assert len(body) == length, f"answer {answer}: cut off at {len(body)} of {length} bytes"
    finally:
        writer.close()
    took = time.monotonic() - started
    print(f"\n{answers} answers in {took:.1f} s")
    assert took > WRITE_TIMEOUT_S  # the answers outlasted the deadline: it bounds only a stall
