"""DATABASE_URL: every form a user pastes, translated into asyncpg.connect() arguments."""

from __future__ import annotations

import getpass
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

_SCHEMES = ("postgres", "postgresql", "postgresql+asyncpg")
# The authority (user name, password, host, port) ends at the first `/`, `?` or `#` after
# `scheme://`. An `@` after that is the user-info's own `@`, pushed there by one of these
# characters in the user name or password (not percent-encoded): urlsplit would take part of
# the password for the host and port, or for the database name.
_AT_AFTER_AUTHORITY = re.compile(r"[/?#].*@", re.DOTALL)
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
    """A DATABASE_URL translated into asyncpg.connect() keyword arguments."""

    connect_kwargs: dict[str, Any]
    notes: tuple[str, ...] = field(default=())

    @property
    def role(self) -> str:
        """The role connected as: the URL's user, else what libpq takes (PGUSER, the OS user)."""
        return str(self.connect_kwargs.get("user") or os.environ.get("PGUSER") or getpass.getuser())

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
    url = url.strip()
    # Until the URL is known to split right, no error repeats any of it: any part could be the
    # password's.
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in _SCHEMES:
        raise ValueError(
            "unsupported scheme: it must start with postgresql://, postgres:// or "
            "postgresql+asyncpg://"
        )
    if _AT_AFTER_AUTHORITY.search(rest):
        raise UnencodedUserInfo
    parts = urlsplit(url)
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
            where = "the port= parameter" if params.get("port") else "the port after the host"
            raise ValueError(f"{where} is not a number")
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
