"""A real PgBouncer in transaction mode (as Neon's -pooler endpoints), started for the tests."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from quoteapi.database.url import parse_database_url
from tests.support.processes import accepts_connections, free_port, running_process


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


@contextmanager
def run_pgbouncer(server_url: str, *, pool_size: int = 4) -> Iterator[str]:
    """Start PgBouncer (transaction mode, `pool_size` server connections per database/user) in
    front of the server at `server_url`; yield the same URL pointed at PgBouncer."""
    binary = find_pgbouncer()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
    # Its files live outside pytest's temporary directories: as root, PgBouncer runs as nobody,
    # and every pytest session started on the machine makes /tmp/pytest-of-root private again.
    with (
        tempfile.TemporaryDirectory(prefix="quoteapi-pgbouncer-") as directory,
        _running(binary, server_url, Path(directory), pool_size) as url,
    ):
        yield url


@contextmanager
def _running(binary: str, server_url: str, workdir: Path, pool_size: int) -> Iterator[str]:
    server = parse_database_url(server_url).connect_kwargs
    user, password = server["user"], server.get("password", "")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    (workdir / "users.txt").write_text(f'"{user}" "{password}"\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.get('host', '127.0.0.1')} port={server.get('port', 5432)}"
        f" user={user} password={password}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {workdir / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 1000\n"
        "server_reset_query =\nignore_startup_parameters = extra_float_digits\n"
    )
    for name in ("users.txt", "pgbouncer.ini"):
        (workdir / name).chmod(0o644)
    # PgBouncer refuses to run as root: drop to an unprivileged user when we are root.
    as_user = {"user": pwd.getpwnam("nobody").pw_uid} if os.geteuid() == 0 else {}
    with running_process(
        [binary, str(workdir / "pgbouncer.ini")],
        cwd=workdir,
        env=os.environ,
        log=workdir / "pgbouncer.log",
        ready=lambda: accepts_connections(port),
        within=20,
        what=f"pgbouncer listening on {port}",
        **as_user,
    ):
        host_part = f"{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}"
        yield f"postgresql://{host_part}/{server['database']}"
