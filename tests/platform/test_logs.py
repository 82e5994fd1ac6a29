"""Logs: one JSON object per line for `serve` (worker processes included), `key=value` lines
for `dev`; never a token."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import httpx
import pytest

from quoteapi.logs import JsonFormatter, ReadableFormatter
from tests.support.processes import running_server, serve_env
from tests.support.tokens import MintToken


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


@pytest.mark.slow
def test_serve_with_two_workers_logs_json_access_lines_without_the_token(
    database_url: str, tmp_path: Path, mint_token: MintToken
) -> None:
    # uvicorn's worker processes are fresh interpreters: each must set up JSON logging itself.
    env = serve_env(database_url)
    token = mint_token("user_logs")
    request_ids = [f"logs-{uuid.uuid4().hex[:12]}" for _ in range(4)]
    with running_server(tmp_path, env, args=("--workers", "2"), ready_within=60) as server:
        for request_id in request_ids:
            headers = {"Authorization": f"Bearer {token}", "X-Request-ID": request_id}
            # A new connection each time, so that both workers get a chance to answer.
            httpx.get(f"{server.url}/me/message", headers=headers, timeout=10)
    text = server.log
    lines = [line for line in text.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON, workers' too
    access = {e.get("request_id"): e for e in entries if e["logger"] == "quoteapi.access"}
    for request_id in request_ids:
        assert access[request_id]["route"] == "/me/message"
        assert access[request_id]["status"] == 404
    assert token not in text
