"""Clerk session-token verification: PyJWT parses the token, checks its RS256 signature and
the registered claims (issuer, required claims); this module adds what only Clerk's tokens
have (`cat`, `sid`, `azp`, `sts`), the time checks on the injectable clock that also ages the
cache, and a cache of verified tokens.

Nothing is decoded before the size check, no key is looked up before the header says RS256,
and no claim is read before the signature verifies. PyJWT is told to accept RS256 only, so a
token cannot choose its algorithm (no `none`, no HMAC keyed with the public PEM).
"""

from __future__ import annotations

import base64
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from quoteapi.auth import sources
from quoteapi.auth.cache import TokenCache
from quoteapi.auth.keys import AmbiguousKey, Clock, KeyProvider, UnknownKey
from quoteapi.auth.problems import (
    TOKEN_AMBIGUOUS_KEY,
    TOKEN_EXPIRED,
    TOKEN_IAT_IN_THE_FUTURE,
    TOKEN_INVALID_ALGORITHM,
    TOKEN_INVALID_AUTHORIZED_PARTY,
    TOKEN_INVALID_ISSUER,
    TOKEN_INVALID_SIGNATURE,
    TOKEN_LIFETIME_TOO_LONG,
    TOKEN_MALFORMED,
    TOKEN_MISSING_CLAIM,
    TOKEN_NOT_ACTIVE_YET,
    TOKEN_SESSION_PENDING,
    TOKEN_TOO_LARGE,
    TOKEN_TYPE_NOT_SESSION,
    TOKEN_UNKNOWN_KEY,
)
from quoteapi.problems import ApiError
from quoteapi.settings import Settings

log = logging.getLogger("quoteapi.auth")

# The JOSE header `cat` Clerk puts on session tokens; JWT templates and machine tokens differ.
SESSION_TOKEN_CATEGORY = "cl_B7d4PD111AAA"  # noqa: S105 - a category, not a secret
# Instances with Clerk's `use_ignore_jwt_cat` stamp this on every token class: it says nothing
# about the class, and Clerk's SDKs treat it as no `cat` at all.
IGNORED_TOKEN_CATEGORY = "cl_I7d4PD111III"  # noqa: S105 - a category, not a secret
# A tuple, not a set: `cat` may be any JSON value, a list included (unhashable).
_ACCEPTED_CATEGORIES = (SESSION_TOKEN_CATEGORY, IGNORED_TOKEN_CATEGORY)
MAX_TOKEN_BYTES = 8 * 1024
# The longest `exp - iat` accepted. An ended session is remembered for REVOCATION_RETENTION (a
# day, quoteapi.webhooks.repository), then pruned: a token living at most 12 h, accepted up to
# CLERK_LEEWAY_SECONDS (at most 300 s) past its exp, can never outlive its session's record.
# Clerk's session tokens live 60 s, the dev issuer's 1 h by default.
MAX_TOKEN_LIFETIME_SECONDS = 12 * 60 * 60
REQUIRED_CLAIMS = ["exp", "iat", "sub", "sid"]
_ALGORITHMS = ["RS256"]
# Three base64url segments: anything else is refused before PyJWT decodes a byte. The signature
# may be empty here so that an unsigned `alg: none` token is answered for its algorithm; once
# the header says RS256, an empty signature is malformed.
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# NUL, or a surrogate: in a str decoded from JSON, a surrogate is always a lone one.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# exp/nbf/iat are compared here, not by PyJWT with `leeway`: PyJWT reads the system clock and
# takes none, while the verifier's clock also ages the token cache and the JWKS cache. And PyJWT
# would answer differently: its int() makes `exp: true` an expired token (malformed here) and
# cuts a fractional exp short of the cache's; a future iat and a future nbf raise the same
# ImmatureSignatureError, told apart only by its message. The rest is PyJWT's.
_PYJWT_OPTIONS: Any = {
    "require": REQUIRED_CLAIMS,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
}


@dataclass(frozen=True, slots=True)
class VerifiedUser:
    """The caller, as a verified Clerk session token names them."""

    user_id: str  # the token's `sub`
    session_id: str  # `sid`


class TokenRejected(ApiError):
    """The token fails one check; `problem` names which (its `code` is stable)."""


class TokenVerifier:
    """Turns a session token into a VerifiedUser or raises TokenRejected / KeysUnavailable."""

    def __init__(
        self,
        keys: KeyProvider,
        *,
        issuer: str,
        authorized_parties: Iterable[str] = (),
        leeway: float = 5.0,
        allow_pending: bool = False,
        cache: TokenCache | None = None,
        clock: Clock = time.time,
        key_source: str = "",
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.authorized_parties = frozenset(authorized_parties)
        self.leeway = leeway
        self.allow_pending = allow_pending
        self.cache = cache if cache is not None else TokenCache(10_000)
        self.clock = clock
        self.key_source = key_source

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = time.time) -> TokenVerifier:
        """Build from the CLERK_* settings; ConfigError (one line) when they cannot work."""
        source = sources.resolve_key_source(settings)
        issuer = sources.resolve_issuer(settings)
        cache = TokenCache(settings.clerk_token_cache_size)
        return cls(
            sources.key_provider(source, settings, clock=clock, on_change=cache.clear),
            issuer=issuer,
            authorized_parties=settings.clerk_authorized_parties,
            leeway=settings.clerk_leeway_seconds,
            allow_pending=settings.clerk_allow_pending_sessions,
            cache=cache,
            clock=clock,
            key_source=source.setting,
        )

    async def start(self, client: httpx.AsyncClient) -> None:
        """Warm the keys with `client` (the lifespan's); a failure is logged, not raised."""
        log.info("event=auth_configured key_source=%s issuer=%s", self.key_source, self.issuer)
        await self.keys.start(client)

    async def close(self) -> None:
        await self.keys.close()
        self.cache.clear()

    async def verify(self, token: str) -> VerifiedUser:
        """The verified caller for `token`; a cache hit costs one SHA-256 and a dict lookup."""
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected(TOKEN_TOO_LARGE, f"The token exceeds {MAX_TOKEN_BYTES} bytes.")
        # "replace" only alters non-ASCII text, which never verifies, so it cannot cause a hit.
        digest = sha256(token.encode("utf-8", "replace")).digest()
        user = self.cache.get(digest, self.clock())
        if user is not None:
            return user
        user, expires_at = await self._verify_uncached(token)
        self.cache.put(digest, user, expires_at, self.clock())
        return user

    async def _verify_uncached(self, token: str) -> tuple[VerifiedUser, float]:
        if _SHAPE.fullmatch(token) is None:
            raise TokenRejected(TOKEN_MALFORMED, "The token is not three base64url segments.")
        if not _canonical_base64url(token.rpartition(".")[2]):
            raise TokenRejected(TOKEN_MALFORMED, "The token signature is not canonical base64url.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected(TOKEN_MALFORMED, "The token is not a JSON Web Token.") from None
        kid = self._check_header(header)
        if token.endswith("."):
            raise TokenRejected(TOKEN_MALFORMED, "The token has no signature.")
        try:
            key = await self.keys.key_for(kid)
        except UnknownKey:
            raise TokenRejected(
                TOKEN_UNKNOWN_KEY, "The token is signed by a key the issuer does not publish."
            ) from None
        except AmbiguousKey:
            raise TokenRejected(
                TOKEN_AMBIGUOUS_KEY,
                "The issuer publishes two different keys under this token's kid: which one "
                "signed it cannot be told.",
            ) from None
        claims = self._decode(token, key)
        if claims is None:  # a bad signature, or keys rotated since they were fetched
            rotated = await self.keys.refreshed_key(kid, key)
            claims = None if rotated is None else self._decode(token, rotated)
        if claims is None:
            raise TokenRejected(TOKEN_INVALID_SIGNATURE, "The token signature does not verify.")
        return self._check_claims(claims)

    def _decode(self, token: str, key: RSAPublicKey) -> dict[str, Any] | None:
        """PyJWT's decode: signature, issuer, required claims; None if the signature fails."""
        try:
            return jwt.decode(
                token, key, algorithms=_ALGORITHMS, issuer=self.issuer, options=_PYJWT_OPTIONS
            )
        except jwt.InvalidSignatureError:
            return None
        except (jwt.InvalidIssuerError, jwt.MissingRequiredClaimError) as exc:
            # PyJWT requires `iss` because an issuer is expected: no `iss` is a wrong issuer.
            if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim != "iss":
                missing = f"The token has no {exc.claim} claim."
                raise TokenRejected(TOKEN_MISSING_CLAIM, missing) from None
            raise TokenRejected(
                TOKEN_INVALID_ISSUER, "The token was issued by another Clerk instance."
            ) from None
        except jwt.PyJWTError:
            raise TokenRejected(TOKEN_MALFORMED, "The token cannot be decoded.") from None

    def _check_header(self, header: Mapping[str, Any]) -> str:
        if header.get("alg") != "RS256":
            raise TokenRejected(
                TOKEN_INVALID_ALGORITHM, "Only RS256-signed Clerk session tokens are accepted."
            )
        if "crit" in header:  # RFC 7515 4.1.11: this verifier implements no extension
            raise TokenRejected(
                TOKEN_MALFORMED, "The token header names critical extensions (crit)."
            )
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise TokenRejected(TOKEN_MALFORMED, "The token header typ is not JWT.")
        # A token without `cat` passes, as Clerk's own SDKs accept it; one with another
        # category (a JWT template, a machine token) is not a session token.
        if "cat" in header and header["cat"] not in _ACCEPTED_CATEGORIES:
            raise TokenRejected(
                TOKEN_TYPE_NOT_SESSION,
                "The token is not a session token (a JWT template or machine token?); "
                "send the session token from getToken().",
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected(TOKEN_MALFORMED, "The token header has no kid.")
        return kid

    def _check_claims(self, claims: dict[str, Any]) -> tuple[VerifiedUser, float]:
        expires_at = _seconds(claims, "exp")
        issued_at = _seconds(claims, "iat")
        user_id, session_id = claims["sub"], claims["sid"]
        if not all(isinstance(value, str) and value for value in (user_id, session_id)):
            raise TokenRejected(TOKEN_MALFORMED, "The token sub and sid must be non-empty strings.")
        if not (storable_text(user_id) and storable_text(session_id)):
            raise TokenRejected(
                TOKEN_MALFORMED, "The token sub and sid must not contain NUL or lone surrogates."
            )
        now = self.clock()
        if now >= expires_at + self.leeway:
            raise TokenRejected(TOKEN_EXPIRED, "The token has expired; send a fresh one.")
        if expires_at - issued_at > MAX_TOKEN_LIFETIME_SECONDS:
            raise TokenRejected(
                TOKEN_LIFETIME_TOO_LONG,
                f"The token lives longer than {MAX_TOKEN_LIFETIME_SECONDS // 3600} hours "
                "(exp - iat); Clerk's session tokens live 60 s: send the session token from "
                "getToken(), not a long-lived JWT template.",
            )
        if "nbf" in claims and _seconds(claims, "nbf") > now + self.leeway:
            raise TokenRejected(TOKEN_NOT_ACTIVE_YET, "The token is not valid yet (nbf).")
        if issued_at > now + self.leeway:
            raise TokenRejected(
                TOKEN_IAT_IN_THE_FUTURE, "The token is issued in the future; check the clocks."
            )
        if self.authorized_parties:
            azp = claims.get("azp")
            if not isinstance(azp, str) or azp not in self.authorized_parties:
                raise TokenRejected(
                    TOKEN_INVALID_AUTHORIZED_PARTY,
                    "The token was minted for an origin not in CLERK_AUTHORIZED_PARTIES.",
                )
        if claims.get("sts") == "pending" and not self.allow_pending:
            raise TokenRejected(
                TOKEN_SESSION_PENDING, "The session has pending tasks; finish signing in first."
            )
        return VerifiedUser(user_id, session_id), expires_at


def storable_text(text: str) -> bool:
    """Text PostgreSQL can store: no NUL, and valid UTF-8 (JSON can carry a lone surrogate)."""
    return _UNSTORABLE.search(text) is None


def _canonical_base64url(segment: str) -> bool:
    """One encoding per byte string: unpadded base64url whose unused trailing bits are zero
    (a decoder ignores them, so a non-canonical twin of a signature would verify too)."""
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError:
        return False
    return base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() == segment


def _seconds(claims: Mapping[str, Any], name: str) -> float:
    """A NumericDate claim (RFC 7519: a JSON number, not a boolean), as seconds."""
    value = claims[name]
    try:
        number = float(value) if type(value) in (int, float) else math.nan
    except OverflowError:
        number = math.nan
    if not math.isfinite(number):
        raise TokenRejected(TOKEN_MALFORMED, f"The token {name} claim is not a number of seconds.")
    return number
