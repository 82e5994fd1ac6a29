"""The web page (`web/`) as `quoteapi dev` serves it: static files on their own port, so the
page and the API are different origins and CORS is exercised as in production, plus the
page's `config.json` (where the API is, and how to get tokens).

In production the same files are static: put them on any host with a `config.json` of your
own beside `index.html` (see `web/config.example.json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles


def web_dir() -> Path | None:
    """The `web/` folder at the top of the checkout; None when quoteapi runs from a wheel (the
    page is for local work from a clone: the wheel and the image carry the API only)."""
    checkout = Path(__file__).resolve().parents[3] / "web"
    return checkout if (checkout / "index.html").is_file() else None


@dataclass(frozen=True)
class PageConfig:
    """What the page needs to know; served as `config.json`."""

    api_port: int
    auth: str  # "dev": tokens from POST /dev/token; "clerk": Clerk's browser SDK
    clerk_publishable_key: str | None = None

    def as_json(self, page_host: str) -> dict[str, object]:
        # The API is reached under the host name the page was opened with (localhost or
        # 127.0.0.1), which keeps the two on the same site while their origins differ by port.
        host = f"[{page_host}]" if ":" in page_host else page_host
        return {
            "apiBaseUrl": f"http://{host}:{self.api_port}",
            "auth": self.auth,
            "clerkPublishableKey": self.clerk_publishable_key,
        }


def build_web_app(config: PageConfig, directory: Path) -> Starlette:
    """`GET /config.json` from `config`, everything else from `directory` (`web/`)."""

    async def config_json(request: Request) -> JSONResponse:
        host = request.url.hostname or "127.0.0.1"
        return JSONResponse(config.as_json(host), headers={"Cache-Control": "no-store"})

    static = StaticFiles(directory=directory, html=True)
    return Starlette(routes=[Route("/config.json", config_json), Mount("/", app=static)])
