"""A local stand-in for Clerk: one RSA key kept in the data directory, its JWKS served by the
dev app, and Clerk-shaped session tokens signed with it (`quoteapi token`).

The verifier fetches this JWKS over HTTP exactly as it fetches Clerk's, so `quoteapi dev`
exercises the production verification path. `quoteapi serve` refuses to run with it.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter
from jwt.algorithms import RSAAlgorithm

from quoteapi.auth.verify import SESSION_TOKEN_CATEGORY

# Fixed, so tokens do not depend on the port the dev server listens on.
DEV_ISSUER = "https://dev-issuer.quoteapi.localhost"
DEV_KID = "ins_quoteapi_dev"
JWKS_PATH = "/dev/.well-known/jwks.json"
KEY_FILE = "dev-issuer-key.pem"


def dev_auth_settings(port: int) -> dict[str, Any]:
    """The settings `quoteapi dev` uses when no Clerk key source is configured."""
    return {
        "quoteapi_dev_issuer": True,
        "clerk_jwks_url": f"http://127.0.0.1:{port}{JWKS_PATH}",
        "clerk_issuer": DEV_ISSUER,
    }


def load_or_create_key(data_dir: Path) -> rsa.RSAPrivateKey:
    """The dev issuer's private key, created on first use (file mode 0600)."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            # O_EXCL: two commands starting at once must not overwrite each other's key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as file:
                file.write(pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key; delete it to make a new one")
    return loaded


def jwks(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """The public half of `key` as a JWKS document, shaped like Clerk's."""
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": DEV_KID, "use": "sig", "alg": "RS256"}]}


def mint_session_token(
    key: rsa.RSAPrivateKey,
    user_id: str,
    *,
    ttl: int = 3600,
    azp: str = "http://localhost:5173",
    session_id: str | None = None,
    now: float | None = None,
) -> str:
    """A Clerk-shaped session token for `user_id`, signed by the dev key, of session
    `session_id` (default: a new one)."""
    issued_at = int(time.time() if now is None else now)
    claims = {
        "sub": user_id,
        "sid": session_id or f"sess_dev_{secrets.token_hex(12)}",
        "iat": issued_at,
        "nbf": issued_at - 5,  # as Clerk does: a little slack for clock skew
        "exp": issued_at + ttl,
        "iss": DEV_ISSUER,
        "azp": azp,
        "v": 2,
        "sts": "active",
    }
    headers = {"kid": DEV_KID, "typ": "JWT", "cat": SESSION_TOKEN_CATEGORY}
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def build_router(data_dir: Path) -> APIRouter:
    """`GET /dev/.well-known/jwks.json`: the dev key's JWKS (the key is created if missing)."""
    document = jwks(load_or_create_key(data_dir))
    router = APIRouter(tags=["dev"], include_in_schema=False)

    @router.get(JWKS_PATH)
    async def dev_jwks() -> dict[str, Any]:
        return document

    return router
