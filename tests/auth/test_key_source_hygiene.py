"""The key source cannot be swapped or used against the service: CLERK_JWKS_URL is https://
unless it is loopback, and a JWKS answer is read within a size cap and one deadline (which of
its entries are used: test_jwks_selection.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from quoteapi.auth.keys import JwksKeys, KeysUnavailable
from quoteapi.auth.sources import resolve_key_source
from quoteapi.settings import ConfigError
from tests.support.app import NO_DATABASE_URL, make_settings
from tests.support.logs import events
from tests.support.tokens import SigningKey


@pytest.mark.parametrize(
    "url",
    [
        "http://clerk.example.com/.well-known/jwks.json",
        "http://10.0.0.5/.well-known/jwks.json",
        "http://127.0.0.1.example.com/jwks.json",
    ],
)
def test_a_plain_http_jwks_url_off_loopback_stops_start_up(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_key_source(make_settings(NO_DATABASE_URL, clerk_jwks_url=url, clerk_jwt_key=""))
    message = str(raised.value)
    assert "\n" not in message
    assert "CLERK_JWKS_URL" in message
    assert "https://" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/jwks.json",
        "http://127.8.9.10/jwks.json",
        "http://localhost:9/jwks.json",
        "http://[::1]:9/jwks.json",
        "https://clerk.example.com/.well-known/jwks.json",
    ],
)
def test_https_or_a_loopback_jwks_url_is_accepted(url: str) -> None:
    source = resolve_key_source(
        make_settings(NO_DATABASE_URL, clerk_jwks_url=url, clerk_jwt_key="")
    )
    assert source.jwks_url == url


class OddJwksServer:
    """A loopback HTTP server answering every GET with `body`, sent `chunk` bytes at a time
    with `pause` seconds between chunks (a slow or oversized key source)."""

    def __init__(self, body: bytes, *, chunk: int = 65536, pause: float = 0.0) -> None:
        server = self
        self.stopping = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for start in range(0, len(body), chunk):
                    if server.stopping.wait(pause):
                        return
                    try:
                        self.wfile.write(body[start : start + chunk])
                        self.wfile.flush()
                    except OSError:
                        return

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> OddJwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def jwks_with_padding(key: SigningKey, size: int) -> bytes:
    document = {"keys": [key.jwk], "padding": "x" * size}
    return json.dumps(document).encode()


@pytest.fixture
def jwks_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="quoteapi.auth"):
        yield caplog


async def test_a_jwks_answer_over_256_kib_is_refused_unread(
    signing_key: SigningKey, jwks_log: pytest.LogCaptureFixture
) -> None:
    with OddJwksServer(jwks_with_padding(signing_key, 4 * 1024 * 1024)) as server:
        keys = JwksKeys(server.url)
        async with httpx.AsyncClient(timeout=5) as http:
            await keys.start(http)
            with pytest.raises(KeysUnavailable):
                await keys.key_for(signing_key.kid)
            await keys.close()
    assert {e["error"] for e in events(jwks_log.records, "jwks_fetch_failed")} == {"too-large"}


async def test_a_jwks_just_under_the_cap_is_used(signing_key: SigningKey) -> None:
    with OddJwksServer(jwks_with_padding(signing_key, 200 * 1024)) as server:
        keys = JwksKeys(server.url)
        async with httpx.AsyncClient(timeout=5) as http:
            await keys.start(http)
            assert await keys.key_for(signing_key.kid) is not None
            await keys.close()


async def test_a_jwks_dribbled_slowly_is_cut_off_at_the_timeout(
    signing_key: SigningKey, jwks_log: pytest.LogCaptureFixture
) -> None:
    # 10 bytes every 0.1 s: each read is quick, so only a deadline for the whole answer holds.
    body = jwks_with_padding(signing_key, 4096)
    with OddJwksServer(body, chunk=10, pause=0.1) as server:
        keys = JwksKeys(server.url, timeout=1.0)
        async with httpx.AsyncClient(timeout=1.0) as http:
            started = time.monotonic()
            await asyncio.wait_for(keys.start(http), timeout=10)
            elapsed = time.monotonic() - started
            await keys.close()
    assert elapsed < 3, elapsed
    assert {e["error"] for e in events(jwks_log.records, "jwks_fetch_failed")} == {"timeout"}
