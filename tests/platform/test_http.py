"""Around the API: CORS for browsers on other origins, OpenAPI for client generators and
Swagger UI, and 503 when the database is down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from quoteapi.settings import Settings
from tests.support.app import running_app
from tests.support.problems import assert_problem
from tests.support.tokens import AuthHeaders

SPA_ORIGIN = "http://localhost:5173"


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
        "get": {"200", "304", "401", "404", "500", "503"},
        "put": {"200", "201", "400", "401", "412", "413", "415", "422", "500", "503"},
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
