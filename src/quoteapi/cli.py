"""The `quoteapi` command: serve, migrate, dev; thin, it calls into the modules that work."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

import uvicorn

from quoteapi import migrations
from quoteapi.database.failures import DatabaseUnreachable
from quoteapi.database.url import DatabaseTarget
from quoteapi.logs import configure_logging
from quoteapi.settings import ConfigError, Settings, load_settings
from quoteapi.webhooks import EVENT_TYPES, USER_DELETED_EVENT

DEV_DATABASE = "quoteapi"
# The role `quoteapi dev` runs the API as on the embedded server: row-level security applies.
DEV_APP_ROLE = "quoteapi_app"

log = logging.getLogger("quoteapi")

# What stops `quoteapi dev` as Ctrl-C does: a process manager's SIGTERM, and the SIGHUP of the
# terminal it runs in closing (by default SIGHUP kills it, leaving its embedded server running).
_DEV_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _require_database(settings: Settings, command: str) -> DatabaseTarget:
    database = settings.database
    if database is None:
        raise ConfigError(
            "DATABASE_URL",
            f"is not set (`quoteapi {command}` needs a database)",
            "set it to your PostgreSQL URL (Neon: the pooled URL for serve, the direct one "
            "for migrate), or run `quoteapi dev` for an embedded database",
        )
    return database


def serve(args: argparse.Namespace) -> None:
    """Run the API for production: no implicit migrations, settings from the environment."""
    from quoteapi.app import create_app
    from quoteapi.edge import LISTEN_BACKLOG, EdgeLimits, protocol_for

    settings = load_settings()
    if settings.quoteapi_dev_issuer:
        raise ConfigError(
            "QUOTEAPI_DEV_ISSUER",
            "is on, and the dev issuer signs tokens with a key anyone with the data directory has",
            "unset it for `quoteapi serve` and configure Clerk (CLERK_PUBLISHABLE_KEY)",
        )
    _require_database(settings, "serve")
    port = _serve_port(settings, args.port)
    create_app(settings)  # every configuration check, before any worker starts
    limits = EdgeLimits.from_settings(settings)
    configure_logging(json_lines=True)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done: exit 0 then, not by signal.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    uvicorn.run(
        "quoteapi.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=port,
        workers=args.workers,
        loop="uvloop",
        # httptools, with deadlines both ways, bounded memory and a connection cap.
        http=protocol_for(limits),  # type: ignore[arg-type]  # uvicorn calls it as a class
        ws="none",  # no WebSocket route: an upgrade request is answered as plain HTTP
        backlog=LISTEN_BACKLOG,
        timeout_keep_alive=settings.quoteapi_keep_alive_seconds,
        timeout_graceful_shutdown=settings.quoteapi_shutdown_grace_seconds,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


def _serve_port(settings: Settings, flag: int | None) -> int:
    """`--port`, else QUOTEAPI_PORT. Given both, they must agree: a container's health check
    reads QUOTEAPI_PORT and cannot see the command line."""
    if flag is None or flag == settings.quoteapi_port:
        return settings.quoteapi_port
    if "quoteapi_port" in settings.model_fields_set:
        raise ConfigError(
            "QUOTEAPI_PORT",
            f"is {settings.quoteapi_port} but --port is {flag} (health checks read QUOTEAPI_PORT)",
            f"set QUOTEAPI_PORT={flag} and drop --port",
        )
    return flag


def migrate(args: argparse.Namespace) -> None:
    """Apply the schema migrations up to head."""
    database = _require_database(load_settings(), "migrate")
    configure_logging(json_lines=False)
    migrations.upgrade(database, args.revision)


def dev(args: argparse.Namespace) -> None:
    """Embedded database (unless DATABASE_URL is set), migrations, the API on 127.0.0.1, and the
    web page on its own port (another origin, allowed by CORS)."""
    from quoteapi.app import create_app
    from quoteapi.auth.sources import has_key_source, is_loopback_host
    from quoteapi.dev import issuer
    from quoteapi.dev.databases import create_database, ensure_app_role, kept_password
    from quoteapi.dev.embedded import EmbeddedPostgres
    from quoteapi.edge import EdgeLimits, protocol_for

    settings = load_settings()
    if not has_key_source(settings):  # no Clerk configured: sign and verify with the dev issuer
        if not is_loopback_host(args.host):
            raise ConfigError(
                "--host",
                f"is {args.host}, not loopback, and the dev issuer's POST /dev/token mints a "
                "token for any user id to whoever reaches it",
                "bind to 127.0.0.1 (the default), or configure Clerk (CLERK_PUBLISHABLE_KEY) "
                "to serve other hosts",
            )
        settings = settings.model_copy(update=issuer.dev_auth_settings(args.port))
    web_port = settings.quoteapi_web_port if args.web_port is None else args.web_port
    if web_port:
        origins = [*settings.cors_allow_origins, *_page_origins(args.host, web_port)]
        settings = settings.model_copy(update={"cors_allow_origins": list(dict.fromkeys(origins))})
    configure_logging(json_lines=False)
    # Exiting through Python (not the default kill) lets the `finally` below stop the database.
    for signum in _DEV_STOP_SIGNALS:
        signal.signal(signum, _exit_on_signal)
    embedded = EmbeddedPostgres(settings.quoteapi_data_dir) if settings.database is None else None
    try:
        if embedded is not None:
            asyncio.run(create_database(embedded.start(), DEV_DATABASE))
            settings = settings.model_copy(update={"database_url": embedded.url(DEV_DATABASE)})
        database = _require_database(settings, "dev")
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
                host=args.host,
                port=args.port,
                http=protocol_for(EdgeLimits.from_settings(settings)),  # type: ignore[arg-type]
                ws="none",
                log_config=None,
                access_log=False,
            )
        )
        page = _page_server(settings, args.host, args.port, web_port) if web_port else None
        greeting = _dev_greeting(settings, args.host, args.port, page.url if page else None)
        # From here SIGTERM and SIGHUP start the graceful shutdown that Ctrl-C starts. uvicorn
        # takes SIGTERM while it serves and raises it again once done: raising SystemExit then,
        # inside the event loop, would cancel the page server mid-shutdown (a traceback).
        for signum in _DEV_STOP_SIGNALS:
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
        log.warning("event=web_page_not_served reason=%s", "web/ is only in a clone of the repo")
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, web_port))
    except OSError as exc:
        sock.close()
        log.warning(
            "event=web_page_not_served port=%s error=%s fix=%s",
            web_port,
            type(exc).__name__,
            "free the port or pass --web-port (0: no page)",
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
        from quoteapi.dev import issuer

        key = issuer.load_or_create_key(settings.quoteapi_data_dir)
        token = issuer.mint_session_token(key, "user_dev", ttl=3600)
        lines += [
            "Try it (a dev token for user_dev, valid 1 hour; more: quoteapi token --user ID):",
            f"  curl -i -X PUT {base}/me/message -H 'Authorization: Bearer {token}' "
            "-H 'Content-Type: application/json' -d '{\"message\": \"Hello, world.\"}'",
        ]
    return "\n".join(lines) + "\n"


def webhook_send(args: argparse.Namespace) -> None:
    """Send a Clerk event signed with CLERK_WEBHOOK_SIGNING_SECRET, as Clerk would."""
    import httpx

    from quoteapi.dev.webhook_sender import sample_event, send_sample_event

    if args.event != USER_DELETED_EVENT and not args.session:
        raise SystemExit(f"quoteapi: --session is required for {args.event}")
    secret = load_settings().clerk_webhook_signing_secret
    event = sample_event(args.event, args.user, args.session)
    try:
        response = send_sample_event(secret, args.url, event, msg_id=args.svix_id)
    except httpx.HTTPError as exc:
        print(f"quoteapi: cannot send to {args.url}: {type(exc).__name__}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"{response.status_code} {response.text}")
    if not response.is_success:
        raise SystemExit(1)


def token(args: argparse.Namespace) -> None:
    """Print a dev-issuer session token that `quoteapi dev` accepts."""
    from quoteapi.auth.sources import has_key_source
    from quoteapi.dev import issuer

    settings = load_settings()
    if has_key_source(settings):
        print(
            "quoteapi: note: a Clerk key source is configured, so `quoteapi dev` verifies against "
            "Clerk and will reject this token",
            file=sys.stderr,
        )
    key = issuer.load_or_create_key(settings.quoteapi_data_dir)
    token = issuer.mint_session_token(
        key, args.user, ttl=args.ttl, azp=args.azp, session_id=args.session
    )
    print(token, flush=True)


def _token_ttl(text: str) -> int:
    """`quoteapi token --ttl`: whole seconds, no more than the verifier accepts."""
    from quoteapi.auth.verify import MAX_TOKEN_LIFETIME_SECONDS

    try:
        ttl = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if ttl > MAX_TOKEN_LIFETIME_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{ttl} is over {MAX_TOKEN_LIFETIME_SECONDS} seconds (12 hours): the verifier "
            "refuses a token living longer, so that none outlives its session's revocation"
        )
    return ttl


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _stop(server: uvicorn.Server) -> None:
    server.should_exit = True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quoteapi", description="Each Clerk user's favourite quote, stored in Postgres."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("serve", help="run the API (production; needs DATABASE_URL)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        help="port to bind (default QUOTEAPI_PORT or 8000; when both are set they must agree)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.set_defaults(handler=serve)

    p = commands.add_parser("migrate", help="apply database migrations (needs DATABASE_URL)")
    p.add_argument("--revision", default="head", help="target revision (default head)")
    p.set_defaults(handler=migrate)

    p = commands.add_parser(
        "dev",
        help="embedded database + migrations + API on 127.0.0.1:8000 + web page on :5173, "
        "for local work",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    p.add_argument(
        "--web-port",
        type=int,
        help="port of the web page, another origin than the API's (default QUOTEAPI_WEB_PORT "
        "or 5173; 0: no page)",
    )
    p.set_defaults(handler=dev)

    p = commands.add_parser(
        "token",
        help="print a session token from the local dev issuer (for curl against `quoteapi dev`)",
        description="Print a Clerk-shaped session token signed by the dev issuer's key (kept in "
        "QUOTEAPI_DATA_DIR). `quoteapi dev` accepts it when no Clerk key source is configured. "
        'Use: curl -H "Authorization: Bearer $(quoteapi token --user user_123)" ...',
    )
    p.add_argument("--user", required=True, help="the user id (`sub`), e.g. user_123")
    p.add_argument(
        "--ttl",
        type=_token_ttl,
        default=3600,
        help="lifetime in seconds, up to 43200 (12 hours), the longest the verifier accepts "
        "(default 3600; Clerk's is 60)",
    )
    p.add_argument(
        "--session", help="the session id (`sid`; default: a new one), e.g. to end it later"
    )
    p.add_argument(
        "--azp",
        default="http://localhost:5173",
        help="the origin that minted it, checked against CLERK_AUTHORIZED_PARTIES "
        "(default http://localhost:5173)",
    )
    p.set_defaults(handler=token)

    p = commands.add_parser(
        "webhook-send",
        help="send a signed sample Clerk webhook: `user.deleted`, or a session that ended "
        "(local testing)",
    )
    p.add_argument(
        "--url",
        default="http://127.0.0.1:8000/webhooks/clerk",
        help="endpoint (default http://127.0.0.1:8000/webhooks/clerk)",
    )
    p.add_argument(
        "--event",
        choices=EVENT_TYPES,
        default=USER_DELETED_EVENT,
        help=f"the event type (default {USER_DELETED_EVENT})",
    )
    p.add_argument("--user", required=True, help="the Clerk user id, e.g. user_123")
    p.add_argument("--session", help="the session id (`sid`) a session event ends, e.g. sess_123")
    p.add_argument("--svix-id", help="message id (default: a new one; repeat one to see a replay)")
    p.set_defaults(handler=webhook_send)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; a configuration problem, or a database that cannot be reached, exits 2 with
    one line on stderr, no traceback."""
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except (ConfigError, DatabaseUnreachable) as exc:
        print(f"quoteapi: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
