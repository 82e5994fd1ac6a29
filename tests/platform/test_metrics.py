"""GET /metrics (QUOTEAPI_METRICS_ENABLED): off by default with nothing installed; on, it needs
QUOTEAPI_METRICS_TOKEN and answers only a scraper sending it, and the request, 401, webhook,
JWKS, token-cache and pool metrics move with the traffic, named and labelled by the
OpenTelemetry semantic conventions in their Prometheus form where one exists."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quoteapi.middleware import RequestContextMiddleware
from quoteapi.settings import ConfigError, load_settings
from tests.support.app import RunningApp, make_settings, running_app
from tests.support.jwks import JwksServer
from tests.support.problems import assert_problem
from tests.support.tokens import TEST_ISSUER, AuthHeaders
from tests.support.webhooks import TEST_SECRET, URL, signed, user_deleted

METRICS_TOKEN = "metrics-scraper-token-for-the-tests"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def metrics_api(database_url: str, jwks_server: JwksServer) -> AsyncIterator[RunningApp]:
    settings = make_settings(
        database_url,
        clerk_jwks_url=jwks_server.url,
        clerk_issuer=TEST_ISSUER,
        quoteapi_metrics_enabled=True,
        quoteapi_metrics_token=METRICS_TOKEN,
        clerk_webhook_signing_secret=TEST_SECRET,
        database_pool_size=3,
    )
    async with running_app(settings) as api:
        # A start-up check runs in the background on a pooled connection: let it finish, so
        # the test sees an idle pool.
        await api.wait_for_idle_pool()
        yield api


@pytest.fixture
def metrics_client(metrics_api: RunningApp) -> httpx.AsyncClient:
    return metrics_api.http


async def scrape(http: httpx.AsyncClient) -> httpx.Response:
    """GET /metrics as Prometheus would, with the token."""
    return await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})


async def test_metrics_are_off_by_default_with_nothing_installed(
    database_url: str, jwks_server: JwksServer
) -> None:
    settings = make_settings(database_url, clerk_jwks_url=jwks_server.url)
    async with running_app(settings, lifespan=False) as api:
        (context,) = [m for m in api.app.user_middleware if m.cls is RequestContextMiddleware]
        assert context.kwargs["observe"] is None  # nothing timed for metrics on the hot path
        assert (await api.http.get("/metrics")).status_code == 404


# The HTTP server metrics of the OpenTelemetry semantic conventions, in their Prometheus form
# (dots become underscores, the unit a suffix): http.server.request.duration (s) and
# http.server.active_requests.
DURATION = "http_server_request_duration_seconds"
ACTIVE = "http_server_active_requests"


async def test_metrics_time_requests_by_method_route_and_status_as_the_conventions_name_them(
    metrics_client: httpx.AsyncClient, auth_headers: AuthHeaders
) -> None:
    auth = auth_headers(f"user_metrics_{uuid.uuid4().hex[:8]}")
    assert (
        await metrics_client.put("/me/message", json={"message": "a"}, headers=auth)
    ).status_code == 201
    assert (
        await metrics_client.put("/me/message", json={"message": "b"}, headers=auth)
    ).status_code == 200
    assert (await metrics_client.get("/no/such/page/123")).status_code == 404
    assert (await metrics_client.request("BREW", "/me/message")).status_code == 405

    response = await scrape(metrics_client)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    def count(method: str, route: str, status: str) -> float:
        labels = {"http_request_method": method, "http_route": route}
        return _value(samples, f"{DURATION}_count", **labels, http_response_status_code=status)

    assert count("PUT", "/me/message", "201") == 1
    assert count("PUT", "/me/message", "200") == 1
    # Unknown paths and methods share one label each, so they cannot grow the number of series.
    assert count("GET", "<unmatched>", "404") == 1
    assert count("_OTHER", "/me/message", "405") == 1
    assert (
        _value(
            samples,
            f"{DURATION}_sum",
            http_request_method="PUT",
            http_route="/me/message",
            http_response_status_code="201",
        )
        > 0
    )
    # The scrape itself is the one request in flight.
    assert _value(samples, ACTIVE, http_request_method="GET") == 1
    assert _value(samples, ACTIVE, http_request_method="PUT") == 0


async def test_metrics_count_401s_by_their_problem_code(
    metrics_client: httpx.AsyncClient,
) -> None:
    await metrics_client.get("/me/message")
    await metrics_client.get("/me/message", headers={"Authorization": "Bearer not.a.token"})
    await metrics_client.get("/me/message", headers={"Authorization": "Bearer not.a.token"})
    samples = _samples((await scrape(metrics_client)).text)
    refused = "quoteapi_http_unauthorized_requests_total"
    assert _value(samples, refused, code="token-missing") == 1
    assert _value(samples, refused, code="token-malformed") == 2


async def test_metrics_count_webhook_deliveries_by_outcome(
    metrics_client: httpx.AsyncClient,
) -> None:
    body, headers = signed(user_deleted(f"user_metrics_{uuid.uuid4().hex[:8]}"))
    await metrics_client.post(URL, content=body, headers=headers)
    await metrics_client.post(URL, content=body, headers=headers)  # Svix retrying it
    ignored, ignored_headers = signed({"type": "email.created", "data": {}})
    await metrics_client.post(URL, content=ignored, headers=ignored_headers)
    await metrics_client.post(URL, content=body, headers={**headers, "svix-signature": "v1,AA=="})
    samples = _samples((await scrape(metrics_client)).text)
    deliveries = "quoteapi_webhook_deliveries_total"
    for outcome in ("deleted", "duplicate", "ignored", "refused"):
        assert _value(samples, deliveries, outcome=outcome) == 1, outcome


async def test_metrics_read_token_cache_jwks_and_pool_at_scrape_time(
    metrics_api: RunningApp,
    metrics_client: httpx.AsyncClient,
    auth_headers: AuthHeaders,
) -> None:
    before = _samples((await scrape(metrics_client)).text)
    assert _value(before, "quoteapi_jwks_fetches_total", outcome="ok") == 1  # the warm-up
    assert _value(before, "db_client_connection_max") == 3
    assert _value(before, "db_client_connection_count", db_client_connection_state="used") == 0
    async with (await metrics_api.engine()).connect():
        during = _samples((await scrape(metrics_client)).text)
    assert _value(during, "db_client_connection_count", db_client_connection_state="used") == 1

    auth = auth_headers(f"user_metrics_{uuid.uuid4().hex[:8]}")
    for _ in range(3):  # one full verification, then two cache hits
        await metrics_client.get("/me/message", headers=auth)
    await metrics_client.get("/me/message", headers={"Authorization": "Bearer not.a.token"})

    after = _samples((await scrape(metrics_client)).text)
    hits = "quoteapi_token_cache_hits_total"
    misses = "quoteapi_token_cache_misses_total"
    assert _value(after, hits) - _value(before, hits) == 2
    assert _value(after, misses) - _value(before, misses) == 2  # the new token and the bad one
    assert _value(after, "quoteapi_token_cache_entries") >= 1
    assert _value(after, "quoteapi_jwks_fetches_total", outcome="error") == 0
    # Each unit of work's wait for its pool slot (none had to queue here).
    waits = "db_client_connection_wait_time_seconds"
    assert _value(after, f"{waits}_count") - _value(before, f"{waits}_count") == 3
    assert _value(after, f"{waits}_bucket", le="0.001") == _value(after, f"{waits}_count")


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", METRICS_TOKEN]
)
async def test_metrics_answer_only_a_scraper_with_the_token(
    metrics_client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await metrics_client.get("/metrics", headers=headers)
    assert_problem(response, 401, "metrics-token-invalid")
    assert response.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert "quoteapi_" not in response.text


def test_metrics_without_a_token_stop_start_up_in_one_line(database_url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None, database_url=database_url, quoteapi_metrics_enabled=True)
    assert str(refused.value).startswith("configuration error: QUOTEAPI_METRICS_TOKEN: is not set")
