"""/docs (Swagger UI) works with no CDN: the page names no other origin, its JavaScript and
CSS come from the service, and a Content-Security-Policy keeps the page where users paste
tokens from loading or running anything else."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.app import NO_DATABASE_URL, make_settings, running_app


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(NO_DATABASE_URL), lifespan=False) as running:
        yield running.http


def csp_directives(response: httpx.Response) -> dict[str, list[str]]:
    policy = response.headers["content-security-policy"]
    directives = (part.split() for part in policy.split(";") if part.strip())
    return {name: sources for name, *sources in directives}


async def test_the_docs_page_names_no_other_origin(api: httpx.AsyncClient) -> None:
    response = await api.get("/docs")
    assert response.status_code == 200
    assert "SwaggerUIBundle" in response.text
    assert re.findall(r"(?:https?:)?//[\w.-]+", response.text) == []


async def test_the_docs_assets_load_from_the_service(api: httpx.AsyncClient) -> None:
    page = (await api.get("/docs")).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/docs/"), asset
        response = await api.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 100, asset
    bundle = next(a for a in assets if a.endswith(".js"))
    assert "javascript" in (await api.get(bundle)).headers["content-type"]


async def test_the_docs_page_has_a_restrictive_content_security_policy(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/docs")
    directives = csp_directives(response)
    assert directives["default-src"] == ["'none'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    script_sources = directives["script-src"]
    assert "'unsafe-inline'" not in script_sources
    assert "'unsafe-eval'" not in script_sources
    assert all(s == "'self'" or s.startswith("'sha256-") for s in script_sources)
    # The one inline script (Swagger UI's start) is allowed by its hash, and only it.
    inline = re.findall(r"<script>(.*?)</script>", response.text, flags=re.DOTALL)
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in inline
    }
    assert hashes
    assert hashes == {s for s in script_sources if s != "'self'"}


async def test_docs_can_still_be_turned_off() -> None:
    settings = make_settings(NO_DATABASE_URL, quoteapi_docs_enabled=False)
    async with running_app(settings, lifespan=False) as api:
        assert (await api.http.get("/docs")).status_code == 404
        assert (await api.http.get("/docs/assets/swagger-ui-bundle.js")).status_code == 404
