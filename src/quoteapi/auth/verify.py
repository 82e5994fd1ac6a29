"""Clerk session-token verification (docs/authentication.md, "What is checked"): PyJWT checks the
signature and registered claims; here only what Clerk's tokens add, each check naming its threat."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from quoteapi.auth import problems, sources
from quoteapi.auth.keys import Clock, JwksKeys
from quoteapi.auth.problems import TokenRejected
from quoteapi.logs import EventLog
from quoteapi.settings import Settings

log = EventLog("quoteapi.auth")

# The JOSE header `cat` of Clerk's session tokens, and the one instances with
# `use_ignore_jwt_cat` put on every token (Clerk's SDKs read it as no `cat` at all).
SESSION_TOKEN_CATEGORY = "cl_B7d4PD111AAA"  # noqa: S105 - a category, not a secret
IGNORED_TOKEN_CATEGORY = "cl_I7d4PD111III"  # noqa: S105 - a category, not a secret
_ACCEPTED_CATEGORIES = (SESSION_TOKEN_CATEGORY, IGNORED_TOKEN_CATEGORY)  # `cat` may be a list
MAX_TOKEN_BYTES = 8 * 1024
# An ended session is remembered a day (quoteapi.webhooks.repository.REVOCATION_RETENTION): a
# token living at most 12 h, accepted at most 300 s (the largest leeway) past its exp, never
# outlives that record. Clerk's session tokens live 60 s, the dev issuer's 1 h by default.
MAX_TOKEN_LIFETIME_SECONDS = 12 * 60 * 60
_PYJWT_OPTIONS: Any = {"require": ["exp", "iat", "sub", "sid"], "verify_aud": False}
# NUL, or a surrogate: in a str decoded from JSON, a surrogate is always a lone one.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class VerifiedUser:
    """The caller, as a verified Clerk session token names them."""

    user_id: str  # the token's `sub`
    session_id: str  # `sid`


class TokenCache:
    """Verified tokens by SHA-256 of the token: a bounded LRU, each entry good until `exp`; hits
    and misses counted for /metrics."""

    __slots__ = ("_entries", "_max_size", "hits", "misses")

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._entries: OrderedDict[bytes, tuple[float, VerifiedUser]] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes, now: float) -> VerifiedUser | None:
        entry = self._entries.get(digest)
        if entry is None or now >= entry[0]:
            if entry is not None:
                del self._entries[digest]
            self.misses += 1
            return None
        self._entries.move_to_end(digest)
        self.hits += 1
        return entry[1]

    def put(self, digest: bytes, user: VerifiedUser, expires_at: float, now: float) -> None:
        if self._max_size == 0 or expires_at <= now:
            return
        entries = self._entries
        entries[digest] = (expires_at, user)
        entries.move_to_end(digest)
        while len(entries) > self._max_size:
            entries.popitem(last=False)
        # Tokens live a minute: drop a couple of expired ones from the cold end as we go.
        for _ in range(2):
            oldest = next(iter(entries.values()))
            if oldest[0] > now:
                break
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


@dataclass(eq=False)
class TokenVerifier:
    """Turns a session token into a VerifiedUser or raises TokenRejected / KeysUnavailable."""

    # A PEM key (CLERK_JWT_KEY) serves every `kid`, as in Clerk's SDKs.
    keys: JwksKeys | RSAPublicKey
    issuer: str
    authorized_parties: tuple[str, ...] = ()  # a tuple, not a set: `azp` may be a list
    leeway: float = 5.0
    allow_pending: bool = False
    cache: TokenCache = field(default_factory=lambda: TokenCache(10_000))
    key_source: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = time.time) -> TokenVerifier:
        """From the CLERK_* settings (`clock` ages the JWKS cache); ConfigError if unusable."""
        source = sources.resolve_key_source(settings)
        cache = TokenCache(settings.clerk_token_cache_size)
        return cls(
            sources.key_provider(source, settings, clock=clock, on_change=cache.clear),
            issuer=sources.resolve_issuer(settings),
            authorized_parties=tuple(settings.clerk_authorized_parties),
            leeway=settings.clerk_leeway_seconds,
            allow_pending=settings.clerk_allow_pending_sessions,
            cache=cache,
            key_source=source.setting,
        )

    async def start(self, client: httpx.AsyncClient | None = None) -> None:
        """Warm the keys (a JWKS is fetched with `client`, else its own); a failure only logs."""
        log.info("auth_configured", key_source=self.key_source, issuer=self.issuer)
        if isinstance(self.keys, JwksKeys):
            await self.keys.start(client)

    async def close(self) -> None:
        if isinstance(self.keys, JwksKeys):
            await self.keys.close()
        self.cache.clear()

    async def verify(self, token: str) -> VerifiedUser:
        """The verified caller for `token`; a cache hit costs one SHA-256 and a dict lookup."""
        # Bounds what an anonymous caller makes us hash and parse before any signature check.
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected(
                problems.TOKEN_TOO_LARGE, f"The token exceeds {MAX_TOKEN_BYTES} bytes."
            )
        # "replace" only alters non-ASCII text, which never verifies, so it cannot cause a hit.
        digest = sha256(token.encode("utf-8", "replace")).digest()
        # The clock PyJWT checks `exp` on: a cached token expires with it.
        user = self.cache.get(digest, time.time())
        if user is not None:
            return user
        user, expires_at = await self._verify_uncached(token)
        self.cache.put(digest, user, expires_at, time.time())
        return user

    async def _verify_uncached(self, token: str) -> tuple[VerifiedUser, float]:
        try:  # PyJWT's parser: three canonical base64url segments, a JSON header, a string kid
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected(
                problems.TOKEN_MALFORMED,
                "The token is not a JWT of three canonical base64url segments.",
            ) from None
        # Explicit typing (RFC 8725 3.11): another kind of JWT signed by the same keys (an OAuth
        # access token is `at+jwt`) is not a session token.
        typ = header.get("typ", "JWT")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise TokenRejected(problems.TOKEN_MALFORMED, "The token header typ is not JWT.")
        # A JWT template or machine token of this instance (same keys, same iss) is no session.
        if header.get("cat", SESSION_TOKEN_CATEGORY) not in _ACCEPTED_CATEGORIES:
            raise TokenRejected(
                problems.TOKEN_TYPE_NOT_SESSION,
                "The token is not a session token (a JWT template or machine token?); "
                "send the session token from getToken().",
            )
        kid = header.get("kid", "")
        keys = self.keys
        key = await keys.key_for(kid) if isinstance(keys, JwksKeys) else keys
        claims = self._decode(token, key)
        # A bad signature, or keys rotated under this kid since the fetch.
        if claims is None and isinstance(keys, JwksKeys):
            rotated = await keys.refreshed_key(kid, key)
            claims = None if rotated is None else self._decode(token, rotated)
        if claims is None:
            raise TokenRejected(
                problems.TOKEN_INVALID_SIGNATURE, "The token signature does not verify."
            )
        return self._check_claims(claims)

    def _decode(self, token: str, key: RSAPublicKey) -> dict[str, Any] | None:
        """PyJWT's decode, RS256 only (no `none`, no HMAC keyed with the public key); None if the
        signature fails."""
        try:
            return jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self.issuer,
                leeway=self.leeway,
                options=_PYJWT_OPTIONS,
            )
        except jwt.InvalidSignatureError:
            return None
        except jwt.InvalidAlgorithmError:
            detail = "Only RS256-signed Clerk session tokens are accepted."
            raise TokenRejected(problems.TOKEN_INVALID_ALGORITHM, detail) from None
        except jwt.ExpiredSignatureError:
            detail = "The token has expired; send a fresh one."
            raise TokenRejected(problems.TOKEN_EXPIRED, detail) from None
        except jwt.ImmatureSignatureError as exc:  # PyJWT checks iat, then nbf
            if str(exc).endswith("(nbf)"):
                detail = "The token is not valid yet (nbf)."
                raise TokenRejected(problems.TOKEN_NOT_ACTIVE_YET, detail) from None
            detail = "The token is issued in the future; check the clocks."
            raise TokenRejected(problems.TOKEN_IAT_IN_THE_FUTURE, detail) from None
        except (jwt.InvalidIssuerError, jwt.MissingRequiredClaimError) as exc:
            # PyJWT requires `iss` because an issuer is expected: no `iss` is a wrong issuer.
            if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim != "iss":
                missing = f"The token has no {exc.claim} claim."
                raise TokenRejected(problems.TOKEN_MISSING_CLAIM, missing) from None
            detail = "The token was issued by another Clerk instance."
            raise TokenRejected(problems.TOKEN_INVALID_ISSUER, detail) from None
        except jwt.PyJWTError:
            raise TokenRejected(problems.TOKEN_MALFORMED, "The token cannot be decoded.") from None

    def _check_claims(self, claims: dict[str, Any]) -> tuple[VerifiedUser, float]:
        user_id, session_id = claims["sub"], claims["sid"]
        # `sub` owns a quote and `sid` is what a revocation names: an empty or non-text one
        # would name nobody (or everybody); PostgreSQL cannot store NUL or a lone surrogate.
        if not all(isinstance(v, str) and v and storable_text(v) for v in (user_id, session_id)):
            raise TokenRejected(
                problems.TOKEN_MALFORMED,
                "The token sub and sid must be non-empty strings without NUL or lone surrogates.",
            )
        # NumericDates are JSON numbers (RFC 7519); PyJWT's int() would also take "1700000000".
        times = (claims["exp"], claims["iat"], claims.get("nbf", 0))
        if not all(type(value) in (int, float) for value in times):
            raise TokenRejected(
                problems.TOKEN_MALFORMED, "The token exp, iat and nbf must be numbers of seconds."
            )
        expires_at = int(claims["exp"])  # as PyJWT reads it
        # No token may outlive the record of its ended session (MAX_TOKEN_LIFETIME_SECONDS).
        if expires_at - int(claims["iat"]) > MAX_TOKEN_LIFETIME_SECONDS:
            raise TokenRejected(
                problems.TOKEN_LIFETIME_TOO_LONG,
                f"The token lives longer than {MAX_TOKEN_LIFETIME_SECONDS // 3600} hours "
                "(exp - iat); Clerk's session tokens live 60 s: send the session token from "
                "getToken(), not a long-lived JWT template.",
            )
        # A token minted for another origin (another app of this Clerk instance) is not ours.
        if self.authorized_parties and claims.get("azp") not in self.authorized_parties:
            raise TokenRejected(
                problems.TOKEN_INVALID_AUTHORIZED_PARTY,
                "The token was minted for an origin not in CLERK_AUTHORIZED_PARTIES.",
            )
        # A session with sign-in tasks left (pending) is not signed in yet.
        if claims.get("sts") == "pending" and not self.allow_pending:
            raise TokenRejected(
                problems.TOKEN_SESSION_PENDING,
                "The session has pending tasks; finish signing in first.",
            )
        return VerifiedUser(user_id, session_id), expires_at


def storable_text(text: str) -> bool:
    """Text PostgreSQL can store: no NUL, and valid UTF-8 (JSON can carry a lone surrogate)."""
    return _UNSTORABLE.search(text) is None
