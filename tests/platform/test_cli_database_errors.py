"""`quoteapi migrate` against a database it cannot use: one line naming the host, what failed
and the fix, exit status 2, no traceback; a certificate that does not verify is not retried."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.processes import clean_env, free_port


def _migrate(database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quoteapi", "migrate"],
        env=clean_env({"database_url": database_url}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _self_signed_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[tuple[int, list[int]]]:
    """A loopback server that answers PostgreSQL's SSLRequest with 'S' and then a TLS handshake
    with a self-signed certificate; yields its port and the count of connections it took."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_self_signed_cert(tmp_path))
    listener = socket.create_server(("127.0.0.1", 0))
    connections = [0]

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            connections[0] += 1
            with client:
                client.recv(8)  # SSLRequest
                client.sendall(b"S")
                # The client refuses our certificate, as it should.
                with contextlib.suppress(ssl.SSLError, OSError):
                    context.wrap_socket(client, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], connections
    listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(), which close() alone does not
    listener.close()
    thread.join(timeout=5)
    assert not thread.is_alive()


def _assert_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("quoteapi: ")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def test_migrate_with_a_certificate_that_does_not_verify_fails_at_once_in_one_line(
    self_signed_server: tuple[int, list[int]], tmp_path: Path
) -> None:
    port, connections = self_signed_server
    url = f"postgresql://app:secret@127.0.0.1:{port}/db?sslmode=verify-full"
    result = _migrate(url, tmp_path)
    _assert_one_line(result, f"127.0.0.1:{port}", "certificate", "sslmode=require", "sslrootcert")
    assert "db_connect_retry" not in result.stderr
    assert connections[0] == 1


def _with(url: str, *, password: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if password is not None:
        user_info, _, host = netloc.rpartition("@")
        netloc = f"{user_info.partition(':')[0]}:{password}@{host}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad-password", "password"),
        ("missing-database", "no_such_database"),
        ("unreachable", "check the host and port"),
    ],
)
def test_migrate_against_a_database_it_cannot_use_says_why_in_one_line(
    case: str, expected: str, server_url: str, tmp_path: Path
) -> None:
    if case == "bad-password":
        url = _with(server_url, password="wrong-password")
    elif case == "missing-database":
        url = _with(server_url, database="no_such_database")
    else:
        url = f"postgresql://app:secret@127.0.0.1:{free_port()}/db"
    host = urlsplit(url).netloc.rpartition("@")[2]
    _assert_one_line(_migrate(url, tmp_path), host, expected, "Fix: ")
