"""A client that hangs up in the middle of its upload is a client abort, not a server error:
against a real `quoteapi serve`, one info-level access-log line with status 499, no traceback,
and 499 (never a 5xx) in the metrics."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import httpx
import pytest

from tests.support.polling import until
from tests.support.processes import ServerProcess, serve_fixture
from tests.support.tokens import MintToken

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"quoteapi-client-abort-test-secret").decode()


METRICS_TOKEN = "metrics-scraper-token"
server = serve_fixture(
    clerk_webhook_signing_secret=WEBHOOK_SECRET,
    quoteapi_metrics_enabled=True,
    quoteapi_metrics_token=METRICS_TOKEN,
)


def _access_line(server: ServerProcess, request_id: str) -> dict[str, object] | None:
    for record in server.log_records():
        if record.get("logger") == "quoteapi.access" and record.get("request_id") == request_id:
            return record
    return None


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/me/message"), ("POST", "/webhooks/clerk")],
)
async def test_an_upload_cut_off_mid_body_is_logged_once_as_a_499_client_abort(
    server: ServerProcess, mint_token: MintToken, method: str, path: str
) -> None:
    request_id = f"abort-{uuid.uuid4().hex[:12]}"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: quoteapi.test\r\n"
        f"Authorization: Bearer {mint_token('user_abort')}\r\n"
        f"svix-id: msg_abort\r\nsvix-timestamp: {int(time.time())}\r\n"
        "svix-signature: v1,AAAA\r\n"
        f"X-Request-ID: {request_id}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head.encode() + b'{"message": "cut off he')
    await writer.drain()
    writer.close()  # mid-body: 977 bytes never come
    await writer.wait_closed()

    await until(
        lambda: _access_line(server, request_id) is not None, within=10, what="the access line"
    )
    line = _access_line(server, request_id)
    assert line is not None
    assert (line["level"], line["status"], line["route"]) == ("info", 499, path)
    loud = [r for r in server.log_records() if r.get("level") in ("warning", "error")]
    assert loud == []
    assert not any("exception" in record for record in server.log_records())

    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        metrics = scraped.text
    requests = "http_server_request_duration_seconds_count{"
    samples = [m for m in metrics.splitlines() if m.startswith(requests)]
    labels = f'http_request_method="{method}",http_response_status_code="499",http_route="{path}"'
    assert labels in "\n".join(samples)
    assert not [sample for sample in samples if 'status_code="5' in sample]
