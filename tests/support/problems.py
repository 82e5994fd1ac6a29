"""The checks of a problem+json answer (RFC 9457), as every error in the API is written."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_CONTENT_TYPE = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """`response` is a complete problem with this status and code; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status, body
    assert body["code"] == code, body
    assert {"type", "title", "detail", "request_id"} <= body.keys(), body
    assert body["title"], body
    assert body["detail"], body
    assert body["request_id"] == response.headers["x-request-id"], body
    return body


def assert_retry_later(response: httpx.Response, code: str) -> dict[str, Any]:
    """`response` is a 503 problem with this code and a Retry-After in seconds; its body."""
    body = assert_problem(response, 503, code)
    assert response.headers["retry-after"].isdigit(), response.headers
    return body
