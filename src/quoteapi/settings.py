"""Configuration from the environment and `.env`, checked at start-up, grouped by concern;
`.env.example` documents each variable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.functional_validators import AfterValidator, BeforeValidator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from quoteapi.database.url import DatabaseTarget, UnencodedUserInfo, parse_database_url


class ConfigError(Exception):
    """A setting that cannot work; the message is one line naming the variable and the fix."""

    def __init__(self, variable: str, problem: str, fix: str) -> None:
        self.variable = variable
        super().__init__(f"configuration error: {variable}: {problem}. Fix: {fix}")


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]


def _parses_or_unset(url: str | None) -> str | None:
    if url is None or not url.strip():
        return None
    parse_database_url(url)
    return url


class DatabaseSettings(BaseModel):
    database_url: Annotated[str | None, AfterValidator(_parses_or_unset)] = None
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    # Every wait on the database has a bound: docs/deploying.md, the table of waits.
    database_pool_timeout: float = Field(default=5.0, gt=0, le=300)
    database_connect_timeout: float = Field(default=5.0, gt=0, le=300)
    database_statement_timeout: float = Field(default=5.0, gt=0, le=300)
    database_lock_timeout: float = Field(default=2.0, gt=0, le=300)
    # None: Neon's host names say, else the first connection (database.connect).
    database_transaction_pooler: bool | None = None

    @field_validator("database_lock_timeout", mode="after")
    @classmethod
    def _lock_wait_ends_before_the_statement(cls, value: float, info: ValidationInfo) -> float:
        statement = info.data.get("database_statement_timeout")
        if statement is not None and value >= statement:
            raise ValueError(
                f"is {value:g} s, not below DATABASE_STATEMENT_TIMEOUT ({statement:g} s), so a "
                "lock wait would never be told apart from a slow statement"
            )
        return value

    @property
    def database(self) -> DatabaseTarget | None:
        return parse_database_url(self.database_url) if self.database_url else None


class ClerkSettings(BaseModel):
    clerk_publishable_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CLERK_PUBLISHABLE_KEY", "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY"),
    )
    clerk_secret_key: SecretStr | None = None
    clerk_jwt_key: str | None = None
    clerk_jwks_url: str | None = None
    clerk_issuer: str | None = None
    clerk_authorized_parties: CommaList = Field(default_factory=list)
    clerk_leeway_seconds: float = Field(default=5.0, ge=0, le=300)
    clerk_allow_pending_sessions: bool = False
    clerk_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    clerk_jwks_cooldown_seconds: float = Field(default=30.0, ge=0)
    clerk_jwks_max_stale_seconds: float = Field(default=86400.0, ge=0)
    clerk_jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    clerk_token_cache_size: int = Field(default=10_000, ge=0)
    clerk_webhook_signing_secret: SecretStr | None = None


class HttpSettings(BaseModel):
    cors_allow_origins: CommaList = Field(default_factory=list)
    quoteapi_shutdown_grace_seconds: int = Field(default=20, ge=0, le=3600)
    quoteapi_request_read_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    quoteapi_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    quoteapi_write_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    quoteapi_max_connections: int | None = Field(default=None, ge=1)
    quoteapi_port: int = Field(default=8000, ge=1, le=65535)
    quoteapi_gc_gen0_threshold: int = Field(default=50_000, ge=0, le=10_000_000)


class ServiceSettings(BaseModel):
    quoteapi_message_max_length: int = Field(default=1000, ge=1, le=10_000)
    quoteapi_docs_enabled: bool = True
    quoteapi_metrics_enabled: bool = False
    # /metrics shows the service's inner state: it answers only this bearer token.
    quoteapi_metrics_token: SecretStr | None = Field(default=None, validate_default=True)

    @field_validator("quoteapi_metrics_token", mode="after")
    @classmethod
    def _metrics_need_a_token(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if info.data.get("quoteapi_metrics_enabled") and not (value and value.get_secret_value()):
            raise ValueError(
                "is not set, and QUOTEAPI_METRICS_ENABLED is on: /metrics would show anyone who "
                "reaches the port the service's inner state; set it to a long random string and "
                "give Prometheus the same as its bearer token"
            )
        return value


class TracingSettings(BaseModel):
    """OpenTelemetry's variables that decide whether traces are exported, and where; the SDK
    reads the others (headers, sampler) itself."""

    otel_sdk_disabled: bool = False
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_service_name: str = "quoteapi"


class DevSettings(BaseModel):
    quoteapi_dev_issuer: bool = False
    quoteapi_web_port: int = Field(default=5173, ge=0, le=65535)
    quoteapi_data_dir: Path = Path(".data")


class Settings(
    DatabaseSettings,
    ClerkSettings,
    HttpSettings,
    ServiceSettings,
    TracingSettings,
    DevSettings,
    BaseSettings,
):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        # `NAME=` (as .env.example lists the optional ones) means unset, not an empty value.
        env_ignore_empty=True,
    )


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and `.env`; raise ConfigError (one line) if invalid."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = str(error["loc"][0]).upper() if error["loc"] else "configuration"
        problem = str(error["msg"]).removeprefix("Value error, ")
        fix = f"correct or unset {variable} (see .env.example)"
        if isinstance(error.get("ctx", {}).get("error"), UnencodedUserInfo):
            fix = UnencodedUserInfo.fix
        elif variable == "DATABASE_URL":
            fix = "set it to a PostgreSQL URL such as postgresql://user:password@host/dbname"
        raise ConfigError(variable, problem, fix) from None


def require_database(settings: Settings, command: str) -> DatabaseTarget:
    database = settings.database
    if database is None:
        raise ConfigError(
            "DATABASE_URL",
            f"is not set (`quoteapi {command}` needs a database)",
            "set it to your PostgreSQL URL (Neon: the pooled URL for serve, the direct one "
            "for migrate), or run `quoteapi dev` for an embedded database",
        )
    return database
