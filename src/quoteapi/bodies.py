"""Reading a request body where a route reads it, within a size limit: routes that read no body
never buffer one (the protocol's read deadline bounds the rest)."""

from __future__ import annotations

from fastapi import Request

from quoteapi.problems import PAYLOAD_TOO_LARGE, ApiError


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body of `request`; a 413 problem, before a byte is read when Content-Length
    says so, once it is over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> ApiError:
    return ApiError(PAYLOAD_TOO_LARGE, f"The request body is larger than {limit} bytes.")
