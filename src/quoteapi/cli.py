"""The `quoteapi` command: serve, migrate, dev; thin, it calls into the modules that work."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from quoteapi.webhooks import EVENT_TYPES, USER_DELETED_EVENT

if TYPE_CHECKING:  # each command imports what it uses: see main
    from quoteapi.settings import Settings


def serve(args: argparse.Namespace) -> None:
    """Run the API for production: no implicit migrations, settings from the environment."""
    import uvicorn

    from quoteapi.app import create_app, tune_garbage_collector
    from quoteapi.edge import LISTEN_BACKLOG, EdgeLimits, protocol_for
    from quoteapi.logs import configure_logging
    from quoteapi.settings import ConfigError, load_settings, require_database

    settings = load_settings()
    if settings.quoteapi_dev_issuer:
        raise ConfigError(
            "QUOTEAPI_DEV_ISSUER",
            "is on, and the dev issuer signs tokens with a key anyone with the data directory has",
            "unset it for `quoteapi serve` and configure Clerk (CLERK_PUBLISHABLE_KEY)",
        )
    require_database(settings, "serve")
    port = _serve_port(settings, args.port)
    create_app(settings)  # every configuration check, before any worker starts
    tune_garbage_collector(settings.quoteapi_gc_gen0_threshold)  # the imports are done
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
    from quoteapi.settings import ConfigError

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
    from quoteapi import migrations
    from quoteapi.logs import configure_logging
    from quoteapi.settings import load_settings, require_database

    database = require_database(load_settings(), "migrate")
    configure_logging(json_lines=False)
    migrations.upgrade(database, args.revision)


def dev(args: argparse.Namespace) -> None:
    """Embedded database (unless DATABASE_URL is set), migrations, the API on 127.0.0.1, and the
    web page on its own port (another origin, allowed by CORS)."""
    from quoteapi.dev import server

    server.run(args.host, args.port, args.web_port)


def webhook_send(args: argparse.Namespace) -> None:
    """Send a Clerk event signed with CLERK_WEBHOOK_SIGNING_SECRET, as Clerk would."""
    import httpx

    from quoteapi.dev.webhook_sender import sample_event, send_sample_event
    from quoteapi.settings import load_settings

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
    from quoteapi.settings import load_settings

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
    if handler is serve:
        # Its imports allocate some 110,000 objects that live as long as the process: scanning
        # them was a sixth of a cold start. `serve` freezes them, then turns the collector on.
        gc.disable()
    from quoteapi.database.failures import DatabaseUnreachable
    from quoteapi.settings import ConfigError

    try:
        handler(args)
    except (ConfigError, DatabaseUnreachable) as exc:
        print(f"quoteapi: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        gc.enable()  # when `serve` stopped before turning it back on
