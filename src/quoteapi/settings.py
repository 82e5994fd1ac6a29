"""Configuration: one settings class, from the environment and `.env`, checked at start-up."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConfigError(Exception):
    """A setting that cannot work; the message is one line naming the variable and the fix."""

    def __init__(self, variable: str, problem: str, fix: str) -> None:
        self.variable = variable
        super().__init__(f"configuration error: {variable}: {problem}. Fix: {fix}")


# libpq's sslmode values and what each asks of the TLS handshake.
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Query parameters we translate; everything else is dropped (never forwarded as a server setting,
# which Neon's pooler rejects) and named once at start-up.
_KNOWN_PARAMS = {
    "sslmode",
    "sslrootcert",
    "channel_binding",
    "connect_timeout",
    "application_name",
    "host",
    "port",
    "user",
    "password",
    "dbname",
}


@dataclass(frozen=True)
class DatabaseTarget:
    """A DATABASE_URL translated into asyncpg.connect() keyword arguments."""

    connect_kwargs: dict[str, Any]
    notes: tuple[str, ...] = field(default=())

    @property
    def redacted(self) -> str:
        """Where the target is, for logs: no password."""
        kw = self.connect_kwargs
        host = kw.get("host", "localhost")
        port = f":{kw['port']}" if "port" in kw else ""
        return f"postgresql://{kw.get('user', '')}@{host}{port}/{kw.get('database', '')}"


def parse_database_url(url: str) -> DatabaseTarget:
    """Accept every form a user pastes (postgres://, postgresql+asyncpg://, Neon's sslmode and
    channel_binding parameters, Unix-socket hosts) and translate it for asyncpg."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ValueError(
            f"unsupported scheme {parts.scheme!r} (expected postgresql://, postgres:// or "
            "postgresql+asyncpg://)"
        )
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    kwargs: dict[str, Any] = {}
    notes: list[str] = []

    url_host, url_port = _split_host_port(parts.netloc.rpartition("@")[2])
    host = url_host or params.get("host", "")
    if host:
        kwargs["host"] = host
    port = params.get("port") or url_port
    if port:
        if not port.isdigit():
            raise ValueError(f"port {port!r} is not a number")
        kwargs["port"] = int(port)
    user = unquote(parts.username) if parts.username else params.get("user")
    if user:
        kwargs["user"] = user
    password = unquote(parts.password) if parts.password else params.get("password")
    if password:
        kwargs["password"] = password
    database = unquote(parts.path.lstrip("/")) or params.get("dbname")
    if database:
        kwargs["database"] = database

    sslmode = params.get("sslmode", "").lower()
    if sslmode:
        if sslmode not in _SSL_MODES:
            raise ValueError(f"sslmode={sslmode!r} is not one of {', '.join(_SSL_MODES)}")
        kwargs["ssl"] = _ssl_for_mode(sslmode, params.get("sslrootcert"))
    if "channel_binding" in params:
        notes.append(
            "DATABASE_URL: channel_binding is not supported by asyncpg and was dropped; "
            "the connection still uses TLS as sslmode asks"
        )
    if "connect_timeout" in params:
        try:
            kwargs["timeout"] = float(params["connect_timeout"])
        except ValueError:
            raise ValueError(
                f"connect_timeout={params['connect_timeout']!r} is not a number"
            ) from None
    if "application_name" in params:
        kwargs["server_settings"] = {"application_name": params["application_name"]}

    ignored = sorted(set(params) - _KNOWN_PARAMS)
    if ignored:
        notes.append(f"DATABASE_URL: ignored unsupported parameters: {', '.join(ignored)}")
    return DatabaseTarget(connect_kwargs=kwargs, notes=tuple(notes))


def _split_host_port(hostport: str) -> tuple[str, str]:
    """Split `host:port`, keeping the host's case (socket paths are case-sensitive)."""
    if hostport.startswith("["):  # IPv6 literal
        host, _, rest = hostport[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = hostport.partition(":")
    return unquote(host), port


def _ssl_for_mode(mode: str, root_cert: str | None) -> ssl.SSLContext | bool | str:
    if mode == "disable":
        return False
    if mode in ("allow", "prefer"):
        return mode  # asyncpg implements libpq's opportunistic modes itself
    context = ssl.create_default_context(cafile=root_cert)
    if mode == "verify-full":
        return context
    context.check_hostname = False
    if mode == "require":
        # libpq's `require` encrypts without checking the certificate; verify-full checks it.
        context.verify_mode = ssl.CERT_NONE
    return context


CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every setting the service reads; names match the environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    database_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    database_pool_timeout: float = Field(default=5.0, gt=0)
    database_connect_timeout: float = Field(default=10.0, gt=0)
    # Behind a transaction-mode pooler (Neon's -pooler endpoints, PgBouncer) prepared statements
    # cannot outlive a transaction. None: detect Neon's pooled host names.
    database_transaction_pooler: bool | None = None
    database_row_level_security: bool = True

    clerk_publishable_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "CLERK_PUBLISHABLE_KEY", "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY", "clerk_publishable_key"
        ),
    )
    clerk_secret_key: SecretStr | None = None
    clerk_jwt_key: str | None = None
    clerk_jwks_url: str | None = None
    clerk_issuer: str | None = None
    clerk_authorized_parties: CommaList = Field(default_factory=list)
    cors_allow_origins: CommaList = Field(default_factory=list)
    quoteapi_message_max_length: int = Field(default=1000, ge=1, le=10_000)
    quoteapi_docs_enabled: bool = True
    # `quoteapi serve` (uvicorn): after SIGTERM, how long in-flight requests may finish; how
    # long a client may take to send one whole request; how long an idle connection is kept.
    quoteapi_shutdown_grace_seconds: int = Field(default=20, ge=0, le=3600)
    quoteapi_request_read_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    quoteapi_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    # The port `quoteapi serve` binds, and the one the image's HEALTHCHECK probes: one setting,
    # so that they cannot disagree (`serve --port` must match it when both are given).
    quoteapi_port: int = Field(default=8000, ge=1, le=65535)
    # Prometheus metrics at GET /metrics (quoteapi.metrics). Off: no route, no per-request work.
    quoteapi_metrics_enabled: bool = False
    clerk_webhook_signing_secret: SecretStr | None = None
    # Session-token verification (quoteapi.auth); the defaults suit Clerk's 60 s tokens.
    clerk_leeway_seconds: float = Field(default=5.0, ge=0, le=300)
    clerk_allow_pending_sessions: bool = False
    clerk_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    clerk_jwks_cooldown_seconds: float = Field(default=30.0, ge=0)
    clerk_jwks_max_stale_seconds: float = Field(default=86400.0, ge=0)
    clerk_jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    clerk_token_cache_size: int = Field(default=10_000, ge=0)
    # Local dev issuer: `quoteapi dev` signs and serves its own keys; `serve` refuses it.
    quoteapi_dev_issuer: bool = False
    # Port of the web page (web/) that `quoteapi dev` serves beside the API; 0: no page.
    quoteapi_web_port: int = Field(default=5173, ge=0, le=65535)

    quoteapi_data_dir: Path = Path(".data")

    @field_validator("clerk_authorized_parties", "cors_allow_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
        return value

    @field_validator("database_url", mode="after")
    @classmethod
    def _database_url_parses(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        if value is not None:
            parse_database_url(value)
        return value

    @property
    def transaction_pooler(self) -> bool:
        """Whether the database is reached through a transaction-mode pooler."""
        if self.database_transaction_pooler is not None:
            return self.database_transaction_pooler
        host = self.database.connect_kwargs.get("host", "") if self.database else ""
        return "-pooler." in str(host)

    @property
    def database(self) -> DatabaseTarget | None:
        """The parsed DATABASE_URL, or None when it is unset (the embedded server is used)."""
        return parse_database_url(self.database_url) if self.database_url else None


_FIXES = {
    "DATABASE_URL": "set it to a PostgreSQL URL such as postgresql://user:password@host/dbname",
}


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and `.env`; raise ConfigError (one line) if invalid."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = str(error["loc"][0]).upper() if error["loc"] else "configuration"
        problem = str(error["msg"]).removeprefix("Value error, ")
        fix = _FIXES.get(variable, f"correct or unset {variable} (see .env.example)")
        raise ConfigError(variable, problem, fix) from None
