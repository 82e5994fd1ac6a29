"""A real PgBouncer in transaction mode (as Neon's -pooler endpoints), started for the tests."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from quoteapi.settings import parse_database_url
from tests.support.processes import free_port


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not listen on {port}: {log.read_text()}")


@contextmanager
def run_pgbouncer(server_url: str, workdir: Path, *, pool_size: int = 4) -> Iterator[str]:
    """Start PgBouncer (transaction mode, `pool_size` server connections per database/user) in
    front of the server at `server_url`; yield the same URL pointed at PgBouncer."""
    binary = find_pgbouncer()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
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
    log = workdir / "pgbouncer.log"
    # PgBouncer refuses to run as root: drop to an unprivileged user when we are root.
    as_user = {"user": pwd.getpwnam("nobody").pw_uid} if os.geteuid() == 0 else {}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [binary, str(workdir / "pgbouncer.ini")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            **as_user,  # type: ignore[arg-type]
        )
    try:
        _wait_for_port(port, process, log)
        host_part = f"{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}"
        yield f"postgresql://{host_part}/{server['database']}"
    finally:
        process.terminate()
        process.wait(timeout=10)
