"""`quoteapi dev`: the embedded PostgreSQL (unless DATABASE_URL is set), migrations, the
least-privilege role, the dev token issuer, the API and the web page beside it, in one process
that Ctrl-C, SIGTERM or a closing terminal stops whole."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator
from types import FrameType

import uvicorn

from quoteapi import migrations
from quoteapi.app import create_app
from quoteapi.auth.sources import has_key_source, is_loopback_host
from quoteapi.dev import issuer
from quoteapi.dev.databases import create_database, ensure_app_role, kept_password
from quoteapi.dev.embedded import EmbeddedPostgres
from quoteapi.edge import EdgeLimits, protocol_for
from quoteapi.logs import EventLog, configure_logging
from quoteapi.settings import ConfigError, Settings, load_settings, require_database

DEV_DATABASE = "quoteapi"
# The role `quoteapi dev` runs the API as on the embedded server: row-level security applies.
DEV_APP_ROLE = "quoteapi_app"

log = EventLog("quoteapi")

# What stops `quoteapi dev` as Ctrl-C does: a process manager's SIGTERM, and the SIGHUP of the
# terminal it runs in closing (by default SIGHUP kills it, leaving its embedded server running).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def run(host: str, port: int, web_port_flag: int | None) -> None:
    """Embedded database (unless DATABASE_URL is set), migrations, the API on `host`:`port`, and
    the web page on its own port (another origin, allowed by CORS), until Ctrl-C."""
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
    # Exiting through Python (not the default kill) lets the `finally` below stop the database.
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _exit_on_signal)
    embedded = EmbeddedPostgres(settings.quoteapi_data_dir) if settings.database is None else None
    try:
        if embedded is not None:
            asyncio.run(create_database(embedded.start(), DEV_DATABASE))
            settings = settings.model_copy(update={"database_url": embedded.url(DEV_DATABASE)})
        database = require_database(settings, "dev")
        migrations.upgrade(database)  # as the owner
        if embedded is not None:  # the API connects as production's least-privilege role
            app_url = asyncio.run(
                ensure_app_role(
                    embedded.url(DEV_DATABASE),
                    DEV_APP_ROLE,
                    kept_password(settings.quoteapi_data_dir / "app-role-password"),
                )
            )
            settings = settings.model_copy(update={"database_url": app_url})
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                http=protocol_for(EdgeLimits.from_settings(settings)),  # type: ignore[arg-type]
                ws="none",
                log_config=None,
                access_log=False,
            )
        )
        page = _page_server(settings, host, port, web_port) if web_port else None
        greeting = _dev_greeting(settings, host, port, page.url if page else None)
        # From here SIGTERM and SIGHUP start the graceful shutdown that Ctrl-C starts. uvicorn
        # takes SIGTERM while it serves and raises it again once done: raising SystemExit then,
        # inside the event loop, would cancel the page server mid-shutdown (a traceback).
        for signum in _STOP_SIGNALS:
            signal.signal(signum, lambda signum, frame: _stop(server))
        asyncio.run(_serve_then_greet(server, greeting, page))
    finally:
        if embedded is not None:
            embedded.stop()


def _page_origins(host: str, web_port: int) -> list[str]:
    """The origins a browser gives the dev page, whichever loopback name it was opened with."""
    names = ["127.0.0.1", "localhost"]
    if host not in ("0.0.0.0", "::", *names):
        names.append(f"[{host}]" if ":" in host else host)
    return [f"http://{name}:{web_port}" for name in names]


class _PageServer(uvicorn.Server):
    """The web page's server: it runs beside the API's in the same loop, on a socket bound in
    advance; the API's server owns the signals (Ctrl-C) and this one stops with it."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, url: str) -> None:
        super().__init__(config)
        self.socket = sock
        self.url = url

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _page_server(settings: Settings, host: str, api_port: int, web_port: int) -> _PageServer | None:
    """The server for web/ on `web_port`, or None (with a warning) when the port is taken."""
    from quoteapi.dev.web import PageConfig, build_web_app, web_dir

    directory = web_dir()
    if directory is None:
        reason = "web/ is only in a clone of the repo"
        log.warning("web_page_not_served", reason=reason)
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
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
    config = PageConfig(
        api_port=api_port,
        auth="dev" if settings.quoteapi_dev_issuer else "clerk",
        clerk_publishable_key=settings.clerk_publishable_key,
    )
    app = build_web_app(config, directory)
    page_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{page_host}:{web_port}"
    return _PageServer(uvicorn.Config(app, log_config=None, access_log=False), sock, url)


async def _serve_then_greet(
    server: uvicorn.Server, greeting: str, page: _PageServer | None
) -> None:
    """Run `server` (and the page's beside it); print `greeting` once it accepts connections
    (not before: a busy port must not be greeted)."""
    page_serving = None
    if page is not None:  # first, so that the page is up once the API answers
        page_serving = asyncio.create_task(page.serve(sockets=[page.socket]))
        while not page.started and not page_serving.done():  # noqa: ASYNC110 - as below
            await asyncio.sleep(0.05)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has a flag, no event
        await asyncio.sleep(0.05)
    if server.started:
        print(greeting, flush=True)
    try:
        await serving
    finally:
        if page is not None and page_serving is not None:
            page.should_exit = True
            await page_serving


def _dev_greeting(settings: Settings, host: str, port: int, page_url: str | None) -> str:
    base = f"http://{host}:{port}"
    lines = [f"\nquoteapi dev is ready: {base}  (Swagger UI: {base}/docs; Ctrl-C stops it)"]
    if page_url is not None:
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


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _stop(server: uvicorn.Server) -> None:
    server.should_exit = True
