"""The `quoteapi` command: it parses the command line and calls the module that does the work."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from collections.abc import Sequence

from quoteapi.webhooks import EVENT_TYPES, USER_DELETED_EVENT


def serve(args: argparse.Namespace) -> None:
    """Run the API for production: no implicit migrations, settings from the environment."""
    import uvicorn

    from quoteapi.app import create_app, tune_garbage_collector
    from quoteapi.edge import LISTEN_BACKLOG, protocol_for
    from quoteapi.logs import configure_logging
    from quoteapi.settings import ConfigError, load_settings

    settings = load_settings()
    if settings.quoteapi_dev_issuer:
        raise ConfigError(
            "QUOTEAPI_DEV_ISSUER",
            "is on, and the dev issuer signs tokens with a key anyone with the data directory has",
            "unset it for `quoteapi serve` and configure Clerk (CLERK_PUBLISHABLE_KEY)",
        )
    port = settings.quoteapi_port if args.port is None else args.port
    # A container's health check reads QUOTEAPI_PORT and cannot see the command line.
    if port != settings.quoteapi_port and "quoteapi_port" in settings.model_fields_set:
        raise ConfigError(
            "QUOTEAPI_PORT",
            f"is {settings.quoteapi_port} but --port is {port} (health checks read QUOTEAPI_PORT)",
            f"set QUOTEAPI_PORT={port} and drop --port",
        )
    create_app(settings)  # every configuration check, before any worker starts
    tune_garbage_collector(settings.quoteapi_gc_gen0_threshold)  # the imports are done
    configure_logging(json_lines=True)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done: exit 0 then, not by signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(
        "quoteapi.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=port,
        workers=args.workers,
        loop="uvloop",
        # httptools, with deadlines both ways, bounded memory and a connection cap.
        http=protocol_for(settings),  # type: ignore[arg-type]
        ws="none",  # no WebSocket route: an upgrade request is answered as plain HTTP
        backlog=LISTEN_BACKLOG,
        timeout_keep_alive=settings.quoteapi_keep_alive_seconds,
        timeout_graceful_shutdown=settings.quoteapi_shutdown_grace_seconds,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


def migrate(args: argparse.Namespace) -> None:
    from quoteapi import migrations
    from quoteapi.logs import configure_logging
    from quoteapi.settings import load_settings, require_database

    database = require_database(load_settings(), "migrate")
    configure_logging(json_lines=False)
    migrations.upgrade(database, args.revision)


def dev(args: argparse.Namespace) -> None:
    from quoteapi.dev import server

    server.run(args.host, args.port, args.web_port)


def token(args: argparse.Namespace) -> None:
    from quoteapi.dev import issuer

    issuer.print_token(args.user, ttl=args.ttl, azp=args.azp, session_id=args.session)


def webhook_send(args: argparse.Namespace) -> None:
    from quoteapi.dev import issuer

    issuer.send_webhook(args.url, args.event, args.user, args.session, args.svix_id)


def _token_ttl(text: str) -> int:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quoteapi", description="Each Clerk user's favourite quote, stored in Postgres."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bind = argparse.ArgumentParser(add_help=False)
    bind.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")

    p = commands.add_parser(
        "serve", parents=[bind], help="run the API (production; needs DATABASE_URL)"
    )
    p.set_defaults(handler=serve)
    p.add_argument(
        "--port",
        type=int,
        help="port to bind (default QUOTEAPI_PORT or 8000; when both are set they must agree)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default %(default)s)")

    p = commands.add_parser("migrate", help="apply database migrations (needs DATABASE_URL)")
    p.set_defaults(handler=migrate)
    p.add_argument("--revision", default="head", help="target revision (default %(default)s)")

    p = commands.add_parser(
        "dev",
        parents=[bind],
        help="embedded database + migrations + API on 127.0.0.1:8000 + web page on :5173, "
        "for local work",
    )
    p.set_defaults(handler=dev)
    p.add_argument("--port", type=int, default=8000, help="port to bind (default %(default)s)")
    p.add_argument(
        "--web-port",
        type=int,
        help="port of the web page, another origin than the API's (default QUOTEAPI_WEB_PORT "
        "or 5173; 0: no page)",
    )

    p = commands.add_parser(
        "token",
        help="print a session token from the local dev issuer (for curl against `quoteapi dev`)",
        description="Print a Clerk-shaped session token signed by the dev issuer's key (kept in "
        "QUOTEAPI_DATA_DIR). `quoteapi dev` accepts it when no Clerk key source is configured. "
        'Use: curl -H "Authorization: Bearer $(quoteapi token --user user_123)" ...',
    )
    p.set_defaults(handler=token)
    p.add_argument("--user", required=True, help="the user id (`sub`), e.g. user_123")
    p.add_argument(
        "--ttl",
        type=_token_ttl,
        default=3600,
        help="lifetime in seconds, up to 43200 (12 hours), the longest the verifier accepts "
        "(default %(default)s; Clerk's is 60)",
    )
    p.add_argument("--session", help="the session id (`sid`; default: a new one)")
    p.add_argument(
        "--azp",
        default="http://localhost:5173",
        help="the origin that minted it, checked against CLERK_AUTHORIZED_PARTIES "
        "(default %(default)s)",
    )

    p = commands.add_parser(
        "webhook-send",
        help="send a signed sample Clerk webhook: `user.deleted`, or a session that ended",
    )
    p.set_defaults(handler=webhook_send)
    p.add_argument(
        "--url",
        default="http://127.0.0.1:8000/webhooks/clerk",
        help="endpoint (default %(default)s)",
    )
    p.add_argument(
        "--event",
        choices=EVENT_TYPES,
        default=USER_DELETED_EVENT,
        help="the event type (default %(default)s)",
    )
    p.add_argument("--user", required=True, help="the Clerk user id, e.g. user_123")
    p.add_argument("--session", help="the session id (`sid`) a session event ends, e.g. sess_123")
    p.add_argument("--svix-id", help="message id (default: a new one; repeat one to see a replay)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; a configuration problem, or a database that cannot be reached, exits 2 with
    one line on stderr, no traceback."""
    args = _parser().parse_args(argv)
    if args.handler is serve:
        # Its imports allocate some 110,000 objects that live as long as the process: scanning
        # them was a sixth of a cold start. `serve` freezes them, then turns the collector on.
        gc.disable()
    from quoteapi.database.failures import DatabaseUnreachable
    from quoteapi.settings import ConfigError

    try:
        args.handler(args)
    except (ConfigError, DatabaseUnreachable) as exc:
        print(f"quoteapi: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        gc.enable()  # when `serve` stopped before turning it back on
