"""The ASGI middleware around every request: request id and access log (HEAD answered as GET);
and CORS with problem+json refusals, where browsers on other origins are allowed."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Mapping

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quoteapi.logs import EventLog, current_request_id
from quoteapi.problems import RETRY_AFTER_SECONDS, Problem, problem_response

access_log = EventLog("quoteapi.access")

SHUTTING_DOWN = Problem(503, "shutting-down", "Server shutting down")

# A client-supplied id is echoed only if it is short and plain: it ends up in logs.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# nginx's status for a request whose client left before the answer: a client abort, not a 5xx.
CLIENT_CLOSED_REQUEST = 499
# Set in the scope by quoteapi.edge when the client left before the answer began; it then
# cancels the request's task, so that what it waits for (a slot, a lock, a statement) is freed.
CLIENT_GONE = "quoteapi.client_gone"

# Told of each request as it begins (its scope) and returns what is told, once it is finished,
# the route template (None: no route matched), the status and the seconds. The metrics module
# provides one when metrics are on.
RequestObserver = Callable[[Scope], Callable[[str | None, int, float], None]]


class RequestContextMiddleware:
    """Accept or generate `X-Request-ID`, echo it, and write one access-log line per request
    (and tell `observe`, if given); status 499 if the client left before the answer. The app
    sees a HEAD request as a GET."""

    def __init__(self, app: ASGIApp, *, observe: RequestObserver | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None
        )
        request_id = given if given and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        # HEAD is GET without the body (RFC 9110, section 9.3.2): the app answers it as a GET,
        # and the server, whose scope still says HEAD, sends the head only.
        app_scope = {**scope, "method": "GET"} if scope["method"] == "HEAD" else scope
        finished = self.observe(scope) if self.observe is not None else None
        began = time.perf_counter()
        status = 500
        started = False
        abandoned = False  # the client disconnected before the response started

        async def receive_noting_disconnect() -> Message:
            nonlocal abandoned
            message = await receive()
            abandoned = abandoned or (message["type"] == "http.disconnect" and not started)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = message.get("headers", [])
                if not any(key.lower() == b"x-request-id" for key, _ in headers):
                    message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            await send(message)

        during = current_request_id.set(request_id)  # every line logged from here on carries it
        try:
            await self.app(app_scope, receive_noting_disconnect, send_with_id)
        except ClientDisconnect:  # reading the body of a client that hung up: no server error
            abandoned = True
        except asyncio.CancelledError:
            if not scope.get(CLIENT_GONE):
                # The shutdown grace period ran out: a problem, not uvicorn's text/plain 500.
                if not started:
                    status = SHUTTING_DOWN.status
                    detail = "The server is shutting down; retry the request."
                    headers = {"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"}
                    answer = _ProblemAnswer(SHUTTING_DOWN, detail, headers)
                    await answer(scope, receive, send_with_id)
                raise
            # Its client left: no error (uvicorn would log one); the access line records it.
            abandoned = True
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        finally:
            if abandoned:  # whatever the app answered, nobody got it
                status = CLIENT_CLOSED_REQUEST
            seconds = time.perf_counter() - began
            # The method the client sent; the route the router noted in the app's scope.
            method, route = scope["method"], getattr(app_scope.get("route"), "path", None)
            duration_ms = round(seconds * 1000, 2)
            access_log.info(
                "request", method=method, route=route, status=status, duration_ms=duration_ms
            )
            if finished is not None:
                finished(route, status, seconds)
        # Left set when an error goes up: the lines logged for it (the 500 handler's, outside
        # this middleware, and the server's) belong to this request, whose task ends with it.
        current_request_id.reset(during)


CORS_PREFLIGHT_REFUSED = Problem(400, "cors-preflight-refused", "CORS preflight refused")


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, but a refused preflight is a problem (Starlette: a text/plain 400)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        # Starlette names what it refused: "Disallowed CORS origin, method, headers".
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ").split(", ")
        detail = "; ".join(self._refusal(reason, request_headers) for reason in refused) + "."
        cors_headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-length", "content-type")
        }
        return _ProblemAnswer(CORS_PREFLIGHT_REFUSED, detail, cors_headers)

    def _refusal(self, reason: str, request_headers: Headers) -> str:
        """What was refused and what to do instead."""
        if reason == "origin":
            origin = request_headers["origin"]
            return f"Origin {origin} is not allowed: add it to the server's CORS_ALLOW_ORIGINS"
        if reason == "method":
            method = request_headers["access-control-request-method"]
            return f"Method {method} is not allowed: use {', '.join(self.allow_methods)}"
        if reason == "headers":
            requested = request_headers["access-control-request-headers"].split(",")
            unknown = [h.strip() for h in requested if h.strip().lower() not in self.allow_headers]
            return (
                f"Request headers {', '.join(unknown)} are not allowed: "
                f"send only {', '.join(self.allow_headers)}"
            )
        return f"{reason.capitalize()} is not allowed"


class _ProblemAnswer(Response):
    """A problem answer from outside the app (its exception handlers are not there), made once
    the scope, which holds the request id, is known."""

    def __init__(self, problem: Problem, detail: str, headers: Mapping[str, str]) -> None:
        super().__init__(status_code=problem.status)
        self.problem, self.detail, self.extra_headers = problem, detail, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        answer = problem_response(request, self.problem, self.detail, headers=self.extra_headers)
        await answer(scope, receive, send)
