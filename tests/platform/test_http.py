"""Around the API: HEAD wherever GET, CORS for browsers on other origins, OpenAPI for client
generators and Swagger UI, and 503 when the database is down."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from quoteapi.messages.schemas import message_pattern
from quoteapi.settings import Settings
from tests.support.app import NO_DATABASE_URL, make_settings, running_app
from tests.support.polling import until
from tests.support.problems import assert_problem
from tests.support.processes import ServerProcess
from tests.support.raw_http import exchange, parse_response, request_bytes
from tests.support.tokens import AuthHeaders, MintToken

SPA_ORIGIN = "http://localhost:5173"


# --- HEAD ---------------------------------------------------------------------------------------


# A real `quoteapi serve`: only the server decides which bytes of an answer are sent.


@pytest.fixture
def callers(server: ServerProcess, mint_token: MintToken) -> dict[str, dict[str, str]]:
    """Request headers by kind of caller: none, a user with a quote stored on `server`, and
    the same user asking whether the quote they hold (its ETag) is still current."""
    signed_in = {"Authorization": f"Bearer {mint_token('user_head')}"}
    stored = httpx.put(
        f"{server.url}/me/message", json={"message": "Head first."}, headers=signed_in, timeout=10
    )
    assert stored.status_code in (200, 201), stored.text
    revalidating = {**signed_in, "If-None-Match": stored.headers["etag"]}
    return {"anonymous": {}, "signed-in": signed_in, "revalidating": revalidating}


@pytest.mark.parametrize(
    ("path", "caller", "status"),
    [
        ("/healthz", "anonymous", 200),
        ("/readyz", "anonymous", 200),
        ("/docs", "anonymous", 200),
        ("/openapi.json", "anonymous", 200),
        ("/me/message", "signed-in", 200),
        ("/me/message", "revalidating", 304),
        ("/me/message", "anonymous", 401),
    ],
)
async def test_head_answers_like_get_without_a_body(
    server: ServerProcess,
    callers: dict[str, dict[str, str]],
    path: str,
    caller: str,
    status: int,
) -> None:
    headers = {**callers[caller], "X-Request-ID": f"head-{uuid.uuid4().hex[:12]}"}
    get = parse_response(await exchange(server.port, request_bytes("GET", path, headers)))
    head = parse_response(await exchange(server.port, request_bytes("HEAD", path, headers)))
    assert (get.status, head.status) == (status, status), (get, head)
    assert head.body == b""
    del get.headers["date"], head.headers["date"]
    assert head.headers == get.headers  # Content-Length, ETag, Content-Type, ... of the GET
    assert int(head.headers.get("content-length", 0)) == len(get.body)


async def test_head_is_logged_as_head(server: ServerProcess) -> None:
    request_id = f"head-log-{uuid.uuid4().hex[:12]}"
    answer = await exchange(
        server.port, request_bytes("HEAD", "/healthz", {"X-Request-ID": request_id})
    )
    assert parse_response(answer).status == 200

    def access_line() -> dict[str, Any] | None:
        lines = [r for r in server.log_records() if r.get("request_id") == request_id]
        return next((r for r in lines if r.get("logger") == "quoteapi.access"), None)

    await until(access_line, within=5, what="the HEAD's access-log line")
    line = access_line()
    assert line is not None
    assert (line["method"], line["route"], line["status"]) == ("HEAD", "/healthz", 200)


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/me/message", "DELETE, GET, HEAD, PUT"),
        ("/healthz", "GET, HEAD"),
        ("/docs", "GET, HEAD"),
        ("/openapi.json", "GET, HEAD"),
        ("/metrics", "GET, HEAD"),
        ("/webhooks/clerk", "POST"),
    ],
)
async def test_a_405_lists_head_exactly_where_get_is_allowed(path: str, allow: str) -> None:
    every_route = make_settings(
        NO_DATABASE_URL,  # routing answers a 405 before anything reaches the database
        quoteapi_metrics_enabled=True,
        quoteapi_metrics_token="metrics-token",
        clerk_webhook_signing_secret="whsec_" + base64.b64encode(b"head-405-test").decode(),
    )
    async with running_app(every_route, lifespan=False) as api:
        response = await api.http.patch(path)
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == allow


# --- CORS ---------------------------------------------------------------------------------------


@pytest.fixture
async def cors_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings.model_copy(update={"cors_allow_origins": [SPA_ORIGIN]})) as api:
        yield api.http


async def test_preflight_from_an_allowed_origin_lets_the_browser_send_authorization(
    cors_client: httpx.AsyncClient,
) -> None:
    response = await cors_client.options(
        "/me/message",
        headers={
            "Origin": SPA_ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type, if-match",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == SPA_ORIGIN
    allowed = response.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "if-match"} <= {h.strip() for h in allowed.split(",")}
    assert "PUT" in response.headers["access-control-allow-methods"]


async def test_preflight_from_another_origin_is_refused(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.options(
        "/me/message",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("preflight", "refusal"),
    [
        (
            {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
            "Origin https://evil.example is not allowed: add it to the server's CORS_ALLOW_ORIGINS",
        ),
        (
            {"Origin": SPA_ORIGIN, "Access-Control-Request-Method": "PATCH"},
            "Method PATCH is not allowed: use GET, PUT, DELETE",
        ),
        (
            {
                "Origin": SPA_ORIGIN,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, x-debug",
            },
            "Request headers x-debug are not allowed: send only accept, ",
        ),
    ],
    ids=["origin", "method", "headers"],
)
async def test_a_refused_preflight_is_a_problem_naming_what_was_refused(
    cors_client: httpx.AsyncClient, preflight: dict[str, str], refusal: str
) -> None:
    response = await cors_client.options("/me/message", headers=preflight)
    body = assert_problem(response, 400, "cors-preflight-refused")
    assert body["detail"].startswith(refusal), body["detail"]


async def test_cross_origin_response_exposes_etag(
    cors_client: httpx.AsyncClient, auth_headers: AuthHeaders
) -> None:
    headers = {**auth_headers("user_cors"), "Origin": SPA_ORIGIN}
    response = await cors_client.put("/me/message", json={"message": "hi"}, headers=headers)
    assert response.headers["access-control-allow-origin"] == SPA_ORIGIN
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "etag" in exposed


@pytest.fixture
async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


async def test_openapi_operation_ids_are_readable(openapi: dict[str, Any]) -> None:
    ids = {
        (path, method): operation["operationId"]
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
    }
    assert ids[("/me/message", "get")] == "get_message"
    assert ids[("/me/message", "put")] == "put_message"
    assert ids[("/me/message", "delete")] == "delete_message"


async def test_openapi_me_operations_use_the_bearer_scheme(openapi: dict[str, Any]) -> None:
    schemes = openapi["components"]["securitySchemes"]
    (name,) = [n for n, s in schemes.items() if s["type"] == "http" and s["scheme"] == "bearer"]
    for operation in openapi["paths"]["/me/message"].values():
        assert {name: []} in operation["security"]


async def test_openapi_documents_every_status_with_a_schema_and_an_example(
    openapi: dict[str, Any],
) -> None:
    expected = {
        "get": {"200", "304", "401", "404", "412", "500", "503"},
        "put": {"200", "201", "400", "401", "403", "412", "413", "415", "422", "500", "503"},
        "delete": {"204", "401", "404", "412", "500", "503"},
    }
    for method, statuses in expected.items():
        responses = openapi["paths"]["/me/message"][method]["responses"]
        assert set(responses) == statuses, method
        for status, response in responses.items():
            if status in ("204", "304"):
                continue
            media = "application/json" if status < "400" else "application/problem+json"
            content = response["content"][media]
            assert "schema" in content, (method, status)
            assert "example" in content or "examples" in content, (method, status)


async def test_docs_are_served_and_can_be_turned_off(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    assert (await client.get("/docs")).status_code == 200
    quiet_settings = settings.model_copy(update={"quoteapi_docs_enabled": False})
    async with running_app(quiet_settings) as quiet:
        assert (await quiet.http.get("/docs")).status_code == 404
        assert (await quiet.http.get("/openapi.json")).status_code == 200


async def test_unreachable_database_returns_503_with_retry_after(
    settings: Settings, auth_headers: AuthHeaders
) -> None:
    down = settings.model_copy(
        update={
            "database_url": "postgresql://nobody:pw@127.0.0.1:1/none",
            "database_connect_timeout": 1,
        }
    )
    async with running_app(down) as api:
        for method in ("GET", "PUT", "DELETE"):
            response = await api.http.request(
                method, "/me/message", json={"message": "x"}, headers=auth_headers("user_down")
            )
            assert_problem(response, 503, "database-unavailable")
            assert response.headers["retry-after"].isdigit()


async def test_openapi_states_no_raw_max_length_for_a_limit_applied_after_trimming(
    openapi: dict[str, Any],
) -> None:
    message = openapi["components"]["schemas"]["MessageIn"]["properties"]["message"]
    assert message["minLength"] == 1
    assert "maxLength" not in message  # "x" * 1000 + "  " is a valid quote
    assert "QUOTEAPI_MESSAGE_MAX_LENGTH, 1000 by default" in message["description"]
    assert message["pattern"] == message_pattern(1000)  # the limit as it applies
