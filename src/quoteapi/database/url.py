"""DATABASE_URL: every form a user pastes, translated into asyncpg.connect() arguments."""

from __future__ import annotations

import getpass
import os
import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from sqlalchemy.engine import make_url

_SCHEMES = ("postgres", "postgresql", "postgresql+asyncpg")
# The authority ends at the first `/`, `?` or `#` after `scheme://`; an `@` after that is the
# user-info's own, pushed there by one of these characters left unencoded in the password.
_AT_AFTER_AUTHORITY = re.compile(r"[/?#].*@", re.DOTALL)
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Every other query parameter is dropped (as a server setting Neon's pooler rejects it) and named.
_KNOWN_PARAMS = {"sslmode", "sslrootcert", "channel_binding", "connect_timeout"}
_KNOWN_PARAMS |= {"application_name", "host", "port", "user", "password", "dbname"}


class UnencodedUserInfo(ValueError):
    """A user name or password with a character the URL syntax reserves: where it ends cannot
    be told, so no part of the URL is repeated back (it could be part of the password)."""

    fix = (
        "percent-encode it (/ as %2F, ? as %3F, # as %23, @ as %40, and : as %3A in the user "
        "name), or leave the password out of the URL and set PGPASSWORD"
    )

    def __init__(self) -> None:
        super().__init__("the user name or password has a character that must be percent-encoded")


@dataclass(frozen=True)
class DatabaseTarget:
    connect_kwargs: dict[str, Any]
    notes: tuple[str, ...] = ()

    @property
    def role(self) -> str:
        """The role connected as: the URL's user, else what libpq takes (PGUSER, the OS user)."""
        return str(self.connect_kwargs.get("user") or os.environ.get("PGUSER") or getpass.getuser())


def parse_database_url(url: str) -> DatabaseTarget:
    """postgres://, postgresql+asyncpg://, Neon's sslmode and channel_binding, Unix-socket hosts.
    Until the URL is known to split right, no error repeats any of it (it may be the password)."""
    scheme, separator, rest = url.strip().partition("://")
    if not separator or scheme.lower() not in _SCHEMES:
        raise ValueError(
            "unsupported scheme: it must start with postgresql://, postgres:// or "
            "postgresql+asyncpg://"
        )
    if _AT_AFTER_AUTHORITY.search(rest):
        raise UnencodedUserInfo
    try:
        parts = make_url(f"postgresql://{rest.partition('#')[0]}")
    except ValueError:
        raise ValueError("the port after the host is not a number") from None
    params = {k: v if isinstance(v, str) else v[-1] for k, v in parts.query.items()}
    if not params.get("port", "0").isdigit():
        raise ValueError("the port= parameter is not a number")
    found = {
        # The host keeps its case: socket paths are case-sensitive.
        "host": unquote(parts.host or "") or params.get("host"),
        "port": int(params["port"]) if params.get("port") else parts.port,
        "user": parts.username or params.get("user"),
        "password": parts.password or params.get("password"),
        "database": parts.database or params.get("dbname"),
    }
    kwargs: dict[str, Any] = {key: value for key, value in found.items() if value}
    notes: list[str] = []
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
    if ignored := sorted(set(params) - _KNOWN_PARAMS):
        notes.append(f"DATABASE_URL: ignored unsupported parameters: {', '.join(ignored)}")
    return DatabaseTarget(kwargs, tuple(notes))


def _ssl_for_mode(mode: str, root_cert: str | None) -> ssl.SSLContext | bool | str:
    if mode == "disable":
        return False
    if mode in ("allow", "prefer"):
        return mode  # asyncpg implements libpq's opportunistic modes itself
    context = ssl.create_default_context(cafile=root_cert)
    if mode == "verify-full":
        return context
    context.check_hostname = False
    if mode == "require":  # libpq's `require` encrypts without checking the certificate
        context.verify_mode = ssl.CERT_NONE
    return context
