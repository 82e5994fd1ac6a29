"""The bytes the edge writes itself, without the app: a refusal in problem+json (before any app
saw the request) and the interim response that probes a client that sent a FIN."""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from quoteapi.problems import PROBLEM_MEDIA_TYPE, Problem, problem_body

INTERIM_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def refusal(problem: Problem, detail: str, request_id: str, headers: dict[str, str]) -> bytes:
    """A whole `problem` answer that closes the connection."""
    body = json.dumps(problem_body(problem, detail, request_id)).encode()
    fields = {
        "content-type": PROBLEM_MEDIA_TYPE,
        "content-length": str(len(body)),
        "x-request-id": request_id,
        **headers,
        "connection": "close",
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return STATUS_LINE[problem.status] + head.encode() + b"\r\n" + body
