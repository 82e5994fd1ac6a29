"""Logs: one JSON object per line for `serve` (worker processes included), `key=value` lines
for `dev`; never a token."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from quoteapi.logs import JsonFormatter, ReadableFormatter
from tests.conftest import TEST_ISSUER, TEST_KEY, MintToken
from tests.test_web_browser import _free_port

_OWN_PREFIXES = ("DATABASE_", "CLERK_", "QUOTEAPI_", "NEXT_PUBLIC_CLERK_", "CORS_")


def _record(**fields: object) -> logging.LogRecord:
    record = logging.LogRecord("quoteapi.access", logging.INFO, __file__, 1, "request", (), None)
    record.fields = fields
    return record


def test_json_formatter_writes_one_object_per_line_with_the_fields() -> None:
    line = JsonFormatter().format(_record(method="GET", route="/me/message", status=200))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "quoteapi.access"
    assert entry["message"] == "request"
    assert (entry["method"], entry["route"], entry["status"]) == ("GET", "/me/message", 200)
    assert entry["ts"].endswith("+00:00")


def test_readable_formatter_writes_key_value_pairs() -> None:
    line = ReadableFormatter().format(_record(method="GET", status=404))
    assert line == "INFO    quoteapi.access: request method=GET status=404"


def test_serve_with_two_workers_logs_json_access_lines_without_the_token(
    database_url: str, tmp_path: Path, mint_token: MintToken
) -> None:
    # uvicorn's worker processes are fresh interpreters: each must set up JSON logging itself.
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env |= {
        "DATABASE_URL": database_url,
        "CLERK_JWT_KEY": TEST_KEY.public_pem,
        "CLERK_ISSUER": TEST_ISSUER,
    }
    log_path = tmp_path / "serve.log"
    argv = ["-m", "quoteapi", "serve", "--port", str(port), "--workers", "2"]
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *argv], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    token = mint_token("user_logs")
    request_ids = [f"logs-{uuid.uuid4().hex[:12]}" for _ in range(4)]
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"not healthy in 60 s:\n{log_path.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)  # poll interval
        for request_id in request_ids:
            headers = {"Authorization": f"Bearer {token}", "X-Request-ID": request_id}
            # A new connection each time, so that both workers get a chance to answer.
            httpx.get(f"http://127.0.0.1:{port}/me/message", headers=headers, timeout=10)
    finally:
        process.terminate()
        process.wait(timeout=30)

    text = log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON, workers' too
    access = {e.get("request_id"): e for e in entries if e["logger"] == "quoteapi.access"}
    for request_id in request_ids:
        assert access[request_id]["route"] == "/me/message"
        assert access[request_id]["status"] == 404
    assert token not in text
