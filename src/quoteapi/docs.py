"""/docs: Swagger UI served from this service, no CDN. The JavaScript and CSS come from the
`fastapi-offline` package (Swagger UI's own dist files); the page carries a
Content-Security-Policy that lets it load nothing from anywhere else."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
_ASSETS = files("fastapi_offline") / "static"


def _script_hashes(html: str) -> str:
    """CSP sources for the page's inline scripts (FastAPI's page starts Swagger UI inline)."""
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in scripts)
    return " ".join(f"'sha256-{digest}'" for digest in digests)


def install_docs(app: FastAPI, openapi_url: str) -> None:
    """Serve Swagger UI at /docs and its assets under /docs/assets."""
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
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS_PATH)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": policy})

    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=str(_ASSETS)), name="docs-assets")
