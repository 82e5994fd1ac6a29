"""`quoteapi dev`: the embedded PostgreSQL (unless DATABASE_URL is set), migrations, the
least-privilege role, the dev token issuer, the API and the web page (`web/`) beside it on
another origin, in one process that Ctrl-C, SIGTERM or a closing terminal stops whole."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from quoteapi import migrations
from quoteapi.app import create_app
from quoteapi.auth.sources import has_key_source, is_loopback_host
from quoteapi.dev import issuer
from quoteapi.dev.databases import create_database, ensure_app_role, kept_password
from quoteapi.dev.embedded import EmbeddedPostgres
from quoteapi.edge import protocol_for
from quoteapi.logs import EventLog, configure_logging
from quoteapi.settings import ConfigError, Settings, load_settings, require_database

DEV_DATABASE = "quoteapi"
# The role `quoteapi dev` runs the API as on the embedded server: row-level security applies.
DEV_APP_ROLE = "quoteapi_app"
# Only in a clone of the repo: the wheel and the image carry the API alone. In production the
# page is static files with a `config.json` of your own (`web/config.example.json`).
WEB_DIR = Path(__file__).resolve().parents[3] / "web"

log = EventLog("quoteapi")


def run(host: str, port: int, web_port_flag: int | None) -> None:
    settings = load_settings()
    if not has_key_source(settings):  # no Clerk configured: sign and verify with the dev issuer
        if not is_loopback_host(host):
            raise ConfigError(
                "--host",
                f"is {host}, not loopback, and the dev issuer's POST /dev/token mints a "
                "token for any user id to whoever reaches it",
                "bind to 127.0.0.1 (the default), or configure Clerk (CLERK_PUBLISHABLE_KEY) "
                "to serve other hosts",
            )
        settings = settings.model_copy(update=issuer.dev_auth_settings(port))
    web_port = settings.quoteapi_web_port if web_port_flag is None else web_port_flag
    if web_port:
        origins = [*settings.cors_allow_origins, *_page_origins(host, web_port)]
        settings = settings.model_copy(update={"cors_allow_origins": list(dict.fromkeys(origins))})
    configure_logging(json_lines=False)
    server: uvicorn.Server | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        # Before the server runs: exit through Python, so that `finally` stops the database.
        # Then: the graceful shutdown Ctrl-C starts (uvicorn raises SIGTERM again once done).
        if server is None:
            raise SystemExit(0)
        server.should_exit = True

    # A process manager's SIGTERM, and the SIGHUP of a closing terminal (by default it kills,
    # leaving the embedded server running), stop it as Ctrl-C does.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    embedded = EmbeddedPostgres(settings.quoteapi_data_dir) if settings.database is None else None
    try:
        if embedded is not None:
            asyncio.run(create_database(embedded.start(), DEV_DATABASE))
            settings = settings.model_copy(update={"database_url": embedded.url(DEV_DATABASE)})
        migrations.upgrade(require_database(settings, "dev"))  # as the owner
        if embedded is not None:  # the API connects as production's least-privilege role
            password = kept_password(settings.quoteapi_data_dir / "app-role-password")
            app_url = asyncio.run(
                ensure_app_role(embedded.url(DEV_DATABASE), DEV_APP_ROLE, password)
            )
            settings = settings.model_copy(update={"database_url": app_url})
        app: ASGIApp = create_app(settings)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=protocol_for(settings),  # type: ignore[arg-type]
            ws="none",
            log_config=None,
            access_log=False,
        )
        sockets = [config.bind_socket()]  # a busy port: logged, exit 3 (uvicorn's)
        page = _page(settings, host, port, web_port) if web_port else None
        if page is not None:
            sockets.append(page[0])
            config.app = _by_port(app, page[1], web_port)
        server = uvicorn.Server(config)
        asyncio.run(
            _serve(server, sockets, _greeting(settings, host, port, web_port if page else None))
        )
    finally:
        if embedded is not None:
            embedded.stop()


def _page_origins(host: str, web_port: int) -> list[str]:
    """The origins a browser gives the dev page, whichever loopback name it was opened with."""
    names = ["127.0.0.1", "localhost"]
    if host not in ("0.0.0.0", "::", *names):
        names.append(f"[{host}]" if ":" in host else host)
    return [f"http://{name}:{web_port}" for name in names]


def _page(
    settings: Settings, host: str, api_port: int, web_port: int
) -> tuple[socket.socket, ASGIApp] | None:
    """web/ and its `config.json` on a socket bound to `web_port`; None (with a warning) when
    it cannot be served."""
    if not (WEB_DIR / "index.html").is_file():
        log.warning("web_page_not_served", reason="web/ is only in a clone of the repo")
        return None
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, web_port))
    except OSError as exc:
        sock.close()
        log.warning(
            "web_page_not_served",
            port=web_port,
            error=type(exc).__name__,
            fix="free the port or pass --web-port (0: no page)",
        )
        return None

    async def config_json(request: Request) -> JSONResponse:
        # The API under the host name the page was opened with (localhost or 127.0.0.1) keeps
        # the two on the same site while their origins differ by port.
        name = request.url.hostname or "127.0.0.1"
        config = {
            "apiBaseUrl": f"http://{f'[{name}]' if ':' in name else name}:{api_port}",
            "auth": "dev" if settings.quoteapi_dev_issuer else "clerk",  # dev: POST /dev/token
            "clerkPublishableKey": settings.clerk_publishable_key,
        }
        return JSONResponse(config, headers={"Cache-Control": "no-store"})

    static = StaticFiles(directory=WEB_DIR, html=True)
    return sock, Starlette(routes=[Route("/config.json", config_json), Mount("/", app=static)])


def _by_port(api: ASGIApp, page: ASGIApp, page_port: int) -> ASGIApp:
    """One server for both: the page's requests are those that arrive on its port."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        on_page = scope["type"] == "http" and scope["server"][1] == page_port
        await (page if on_page else api)(scope, receive, send)

    return app


async def _serve(server: uvicorn.Server, sockets: list[socket.socket], greeting: str) -> None:
    """Print `greeting` once the server accepts connections (a failed start is not greeted)."""
    serving = asyncio.create_task(server.serve(sockets))
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has a flag, no event
        await asyncio.sleep(0.05)
    if server.started:
        print(greeting, flush=True)
    await serving


def _greeting(settings: Settings, host: str, port: int, web_port: int | None) -> str:
    base = f"http://{host}:{port}"
    lines = [f"\nquoteapi dev is ready: {base}  (Swagger UI: {base}/docs; Ctrl-C stops it)"]
    if web_port:
        page_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{web_port}"
        how = "dev sign-in, no Clerk account needed" if settings.quoteapi_dev_issuer else "Clerk"
        lines.append(f"Web page: {page_url}  (save, replace and delete your quote; {how})")
    if settings.quoteapi_dev_issuer:
        key = issuer.load_or_create_key(settings.quoteapi_data_dir)
        token = issuer.mint_session_token(key, "user_dev", ttl=3600)
        lines += [
            "Try it (a dev token for user_dev, valid 1 hour; more: quoteapi token --user ID):",
            f"  curl -i -X PUT {base}/me/message -H 'Authorization: Bearer {token}' "
            "-H 'Content-Type: application/json' -d '{\"message\": \"Hello, world.\"}'",
        ]
    return "\n".join(lines) + "\n"
