"""The CLERK_* settings turned into a key source, its key provider and the issuer (a setting that
cannot work: a one-line ConfigError at start-up)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from quoteapi.auth.keys import Clock, JwksKeys
from quoteapi.settings import ConfigError, Settings

CLERK_API_JWKS_URL = "https://api.clerk.com/v1/jwks"


def frontend_api_from_publishable_key(publishable_key: str) -> str:
    """The Frontend API host inside `pk_test_...`/`pk_live_...` (base64 of `<host>$`)."""
    key = publishable_key.strip()
    encoded = key[len("pk_test_") :]  # as long as "pk_live_"
    try:
        host = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        host = ""
    host = host.removesuffix("$") if host.endswith("$") else ""
    if not (
        key.startswith(("pk_test_", "pk_live_"))
        and host
        and host.isprintable()
        and not any(c in host for c in "/:@ \t?#")
    ):
        raise ConfigError(
            "CLERK_PUBLISHABLE_KEY",
            "is not `pk_test_` or `pk_live_` followed by the base64 of `<Frontend API host>$`",
            "copy the publishable key again from the Clerk dashboard (API keys)",
        )
    return host


@dataclass(frozen=True)
class KeySource:
    """One PEM key, or a JWKS URL and its headers; `setting` names the variable."""

    setting: str
    static_key: RSAPublicKey | None = None
    jwks_url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def has_key_source(settings: Settings) -> bool:
    """True when any Clerk key source is configured (else `quoteapi dev` runs its own issuer)."""
    return bool(
        settings.clerk_jwt_key
        or settings.clerk_jwks_url
        or settings.clerk_publishable_key
        or settings.clerk_secret_key
    )


def resolve_key_source(settings: Settings) -> KeySource:
    """The first configured of: CLERK_JWT_KEY, CLERK_JWKS_URL, the publishable key's Frontend
    API JWKS, the Backend API JWKS with CLERK_SECRET_KEY; ConfigError if none is."""
    if settings.clerk_jwt_key:
        return KeySource("CLERK_JWT_KEY", static_key=_load_pem(settings.clerk_jwt_key))
    if settings.clerk_jwks_url:
        url = settings.clerk_jwks_url.strip()
        # Keys fetched over plain http off this machine could be swapped in transit.
        loopback = url.startswith("http://") and is_loopback_host(urlsplit(url).hostname or "")
        if not (url.startswith("https://") or loopback):
            raise ConfigError(
                "CLERK_JWKS_URL",
                "is not an https:// URL (keys fetched over plain http could be swapped in transit)",
                "use your instance's https:// JWKS URL (http only for 127.0.0.1, ::1 or localhost)",
            )
        return KeySource("CLERK_JWKS_URL", jwks_url=url)
    if settings.clerk_publishable_key:
        host = frontend_api_from_publishable_key(settings.clerk_publishable_key)
        return KeySource("CLERK_PUBLISHABLE_KEY", jwks_url=f"https://{host}/.well-known/jwks.json")
    if settings.clerk_secret_key:
        secret = settings.clerk_secret_key.get_secret_value()
        return KeySource(
            "CLERK_SECRET_KEY",
            jwks_url=CLERK_API_JWKS_URL,
            headers={"Authorization": f"Bearer {secret}"},
        )
    raise ConfigError(
        "CLERK_PUBLISHABLE_KEY",
        "no Clerk key source is configured (CLERK_JWT_KEY, CLERK_JWKS_URL, "
        "CLERK_PUBLISHABLE_KEY or CLERK_SECRET_KEY)",
        "set CLERK_PUBLISHABLE_KEY from the Clerk dashboard (API keys), "
        "or run `quoteapi dev` for a local dev issuer",
    )


def resolve_issuer(settings: Settings) -> str:
    """CLERK_ISSUER, else `https://<frontend-api>` from the publishable key."""
    if settings.clerk_issuer and settings.clerk_issuer.strip():
        return settings.clerk_issuer.strip().rstrip("/")
    if settings.clerk_publishable_key:
        return f"https://{frontend_api_from_publishable_key(settings.clerk_publishable_key)}"
    raise ConfigError(
        "CLERK_ISSUER",
        "is not set and there is no CLERK_PUBLISHABLE_KEY to derive it from",
        "set CLERK_ISSUER to your Frontend API URL (https://<your-instance>.clerk.accounts.dev) "
        "or set CLERK_PUBLISHABLE_KEY",
    )


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1)."""
    try:
        return host.lower() == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_pem(pem: str) -> RSAPublicKey:
    # .env files often carry the PEM on one line with literal `\n` escapes.
    text = pem.strip().replace("\\n", "\n")
    try:
        key = load_pem_public_key(text.encode())
    except ValueError:
        key = None
    if not isinstance(key, RSAPublicKey):
        raise ConfigError(
            "CLERK_JWT_KEY",
            "is not a PEM RSA public key",
            "paste the PEM public key from the Clerk dashboard (API keys > JWT public key)",
        )
    return key


def key_provider(
    source: KeySource, settings: Settings, *, clock: Clock, on_change: Callable[[], None]
) -> JwksKeys | RSAPublicKey:
    if source.static_key is not None:
        return source.static_key
    assert source.jwks_url is not None
    return JwksKeys(
        source.jwks_url,
        headers=source.headers,
        ttl=settings.clerk_jwks_cache_seconds,
        cooldown=settings.clerk_jwks_cooldown_seconds,
        max_stale=settings.clerk_jwks_max_stale_seconds,
        timeout=settings.clerk_jwks_timeout_seconds,
        # The dev issuer's JWKS is served by the app itself, which is not listening yet.
        warm_up=not settings.quoteapi_dev_issuer,
        clock=clock,
        on_change=on_change,
    )
