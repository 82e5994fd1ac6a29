"""The OpenAPI document as client generators read it, and /docs: Swagger UI from the
`fastapi-offline` package, no CDN, under a Content-Security-Policy that loads nothing else."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from quoteapi.problems import PROBLEM_MEDIA_TYPE

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
_ASSETS = files("fastapi_offline") / "static"
# The schema FastAPI gives its own 422 responses.
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def use_problem_media_type(
    app: FastAPI, *, security_schemes: Mapping[str, Any], body_schemas: Mapping[str, Any]
) -> None:
    """Document error bodies as application/problem+json (FastAPI says application/json), and
    optional parameters as plain optional values; add the `security_schemes` routes name and the
    `body_schemas` of bodies a route reads itself."""
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = fastapi_openapi()  # FastAPI keeps it as app.openapi_schema: shaped in place
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for parameter in operation.get("parameters", []):
                    _absent_not_null(parameter)
                responses = operation.get("responses", {})
                # FastAPI adds a 422 to any operation with parameters; ours declare theirs
                # where a 422 can happen (a body), and it is a problem document.
                if _FASTAPI_422 in str(responses.get("422", "")):
                    del responses["422"]
                for status, response in responses.items():
                    content = response.get("content", {})
                    if status[0] in "45" and "application/json" in content:
                        problem = content.setdefault(PROBLEM_MEDIA_TYPE, {})
                        problem["schema"] = content.pop("application/json")["schema"]
        components = schema.setdefault("components", {})
        components["securitySchemes"] = dict(security_schemes)
        schemas = components.setdefault("schemas", {})
        schemas.update(body_schemas)
        if _FASTAPI_422 not in str(schema.get("paths")):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        components["schemas"] = dict(sorted(schemas.items()))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _absent_not_null(parameter: dict[str, Any]) -> None:
    """A header or query parameter is sent or absent, never null (FastAPI says "string or null",
    and generated clients that accept None crash on it): the plain type, not required."""
    schema = parameter.get("schema", {})
    types = schema.get("anyOf", [])
    if parameter.get("required") or len(types) != 2 or {"type": "null"} not in types:
        return
    schema.pop("anyOf")
    parameter["schema"] = {**next(t for t in types if t != {"type": "null"}), **schema}


def _script_hashes(html: str) -> str:
    """CSP sources for the page's inline scripts (FastAPI's page starts Swagger UI inline)."""
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in scripts)
    return " ".join(f"'sha256-{digest}'" for digest in digests)


def install_docs(app: FastAPI, openapi_url: str) -> None:
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        # No badge fetched from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    html = bytes(page.body).decode()
    # Tokens are pasted into this page: it runs only this service's code and talks only to it.
    # Swagger UI sets inline styles, so styles may be inline; scripts may not, bar its start.
    policy = (
        "default-src 'none'; "
        f"script-src 'self' {_script_hashes(html)}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": policy})

    app.mount(ASSETS_PATH, StaticFiles(directory=str(_ASSETS)), name="docs-assets")
