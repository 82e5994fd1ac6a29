"""The bench's Clerk stand-in: one RSA key, and files of Clerk-shaped session tokens for it.

Tokens are minted with `quoteapi.dev.issuer.mint_session_token` (the header and claims of a
Clerk v2 session token) and written one per line for wrk's Lua script. Signing is the slow part
(about 0.3 ms a token), so files are minted in parallel and cached in `bench/.cache/`, keyed by
the key, the issuer, the users and the count; a file is re-minted when its tokens get within
two hours of their expiry.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from quoteapi.auth.verify import MAX_TOKEN_LIFETIME_SECONDS
from quoteapi.dev import issuer

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
ISSUER = issuer.DEV_ISSUER
AZP = "http://localhost:5173"
# Clerk's tokens live 60 s; these live as long as the verifier accepts (12 hours) so that a
# cached file serves a day's runs. The verifier's work does not depend on the lifetime.
TTL_SECONDS = MAX_TOKEN_LIFETIME_SECONDS
_REMINT_MARGIN_SECONDS = 2 * 3600
_FORMAT = "v2"  # bump when the token layout changes, to invalidate cached files
_CHUNK = 2000

_worker_key: rsa.RSAPrivateKey | None = None


def user_id(index: int) -> str:
    """The bench user number `index`, shaped like a Clerk id (`user_` + 27 characters)."""
    return f"user_{index:027d}"


def load_key(cache_dir: Path = CACHE_DIR) -> rsa.RSAPrivateKey:
    """The bench signing key, created once in `cache_dir` (mode 0600) and kept."""
    return issuer.load_or_create_key(cache_dir)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    """The PEM public key, as CLERK_JWT_KEY takes it."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def pick_users(users: range, count: int) -> list[int]:
    """`count` user numbers from `users`: spread evenly when there are more users than tokens
    (so reads touch the whole index), else cycling through every user."""
    if count <= len(users):
        return [users[i * len(users) // count] for i in range(count)]
    return [users[i % len(users)] for i in range(count)]


def token_file(
    key: rsa.RSAPrivateKey,
    label: str,
    users: range,
    count: int,
    *,
    cache_dir: Path = CACHE_DIR,
    processes: int | None = None,
) -> Path:
    """A file of `count` distinct tokens for users picked from `users` (see `pick_users`),
    minted now or taken from the cache."""
    fingerprint = hashlib.sha256(
        "\n".join(
            [_FORMAT, public_pem(key), ISSUER, AZP, str(users.start), str(users.stop), str(count)]
        ).encode()
    ).hexdigest()[:16]
    path = cache_dir / f"tokens-{label}-{count}-{fingerprint}.txt"
    if path.exists() and time.time() - path.stat().st_mtime < TTL_SECONDS - _REMINT_MARGIN_SECONDS:
        return path
    picked = pick_users(users, count)
    started = time.perf_counter()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chunks = [picked[i : i + _CHUNK] for i in range(0, len(picked), _CHUNK)]
    processes = processes or os.cpu_count() or 1
    if len(chunks) > 1 and processes > 1:
        with multiprocessing.get_context("spawn").Pool(
            processes, initializer=_init_worker, initargs=(pem,)
        ) as pool:
            minted = pool.map(_mint_chunk, chunks)
    else:
        _init_worker(pem)
        minted = [_mint_chunk(chunk) for chunk in chunks]
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    with partial.open("w") as file:
        for chunk in minted:
            file.write("\n".join(chunk))
            file.write("\n")
    partial.replace(path)
    print(
        f"bench: minted {count:,} {label} tokens in {time.perf_counter() - started:.1f} s "
        f"(cached: {path})",
        flush=True,
    )
    return path


def _init_worker(pem: bytes) -> None:
    global _worker_key
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    _worker_key = loaded


def _mint_chunk(numbers: list[int]) -> list[str]:
    assert _worker_key is not None
    now = time.time()
    return [
        issuer.mint_session_token(_worker_key, user_id(n), ttl=TTL_SECONDS, azp=AZP, now=now)
        for n in numbers
    ]
