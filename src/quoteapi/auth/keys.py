"""The token-signing keys of a JWKS URL, cached as docs/authentication.md ("Signing keys and the
token cache") describes (a PEM key needs none of this: sources.py picks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm
from jwt.exceptions import PyJWTError

from quoteapi.auth.problems import (
    AUTH_UNAVAILABLE,
    TOKEN_AMBIGUOUS_KEY,
    TOKEN_UNKNOWN_KEY,
    TokenRejected,
)
from quoteapi.logs import EventLog
from quoteapi.problems import RETRY_AFTER_SECONDS, ApiError

log = EventLog("quoteapi.auth")

# A JWKS holds a handful of keys (a few KiB); a bigger answer is refused, not buffered.
MAX_JWKS_BYTES = 256 * 1024

Clock = Callable[[], float]
# The usable keys by `kid`, each by its (n, e): two different keys under one kid make it ambiguous.
KeySet = dict[str, dict[tuple[str, str], RSAPublicKey]]


class JwksRefused(ValueError):
    """A JWKS answer refused; the message is the reason logged."""


class KeysUnavailable(ApiError):
    """No usable key: the JWKS source is unreachable and no recent keys are cached (a 503)."""

    def __init__(self) -> None:
        detail = "The Clerk signing keys cannot be fetched right now; retry shortly."
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        super().__init__(AUTH_UNAVAILABLE, detail, headers=retry)


def parse_jwks(document: Any) -> KeySet:
    """The keys of a JWKS document that can verify an RS256 signature. RFC 7517 lets one `kid`
    name equivalent keys of other types or uses: those are skipped, never making it ambiguous."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document")
    key_set: KeySet = {}
    for entry in entries:
        key = _rs256_verification_key(entry)
        if key is not None:
            key_set.setdefault(entry["kid"], {})[(str(entry["n"]), str(entry["e"]))] = key
    if not key_set:
        raise ValueError("no RS256 signing keys")
    return key_set


def _rs256_verification_key(entry: Any) -> RSAPublicKey | None:
    if not (
        isinstance(entry, dict)
        and entry.get("kty") == "RSA"
        and entry.get("use", "sig") == "sig"
        and entry.get("alg", "RS256") == "RS256"
        and isinstance(ops := entry.get("key_ops", ["verify"]), list)
        and "verify" in ops
        and isinstance(entry.get("kid"), str)
    ):
        return None
    try:  # from the public fields only: a private member is never loaded
        key = RSAAlgorithm.from_jwk({"kty": "RSA", "n": entry.get("n"), "e": entry.get("e")})
    except (PyJWTError, ValueError, TypeError):
        return None
    # A modulus under 2048 bits can be factored (RFC 7518 3.3): its signatures prove nothing.
    return key if isinstance(key, RSAPublicKey) and key.key_size >= 2048 else None


@dataclass(eq=False)
class JwksKeys:
    """Keys from a JWKS URL: kept `ttl` seconds, then refreshed in the background while the old
    keys serve; one fetch at a time; an unknown `kid` or a bad signature forces at most one
    refetch per `cooldown`; the last good keys serve up to `max_stale` seconds of outage."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    ttl: float = 300.0
    cooldown: float = 30.0
    max_stale: float = 86400.0
    timeout: float = 5.0
    warm_up: bool = True
    clock: Clock = time.time
    on_change: Callable[[], None] = lambda: None
    # Fetches by outcome, read by /metrics at scrape time (a fetch is never on a hot path).
    fetches_ok: int = field(default=0, init=False)
    fetches_failed: int = field(default=0, init=False)
    _client: httpx.AsyncClient | None = field(default=None, init=False)
    _own_client: bool = field(default=False, init=False)
    _keys: KeySet = field(default_factory=dict, init=False)
    _fetched_at: float = field(default=-math.inf, init=False)  # the last successful fetch
    _next_refresh_at: float = field(default=-math.inf, init=False)
    _last_forced_at: float = field(default=-math.inf, init=False)  # for an unknown kid
    _inflight: asyncio.Task[None] | None = field(default=None, init=False)

    async def start(self, client: httpx.AsyncClient | None = None) -> None:
        """Fetch with `client` (None: one of our own) and warm the cache; a failure only logs."""
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=self.timeout)
        if self.warm_up:
            await asyncio.shield(self._refresh())
            if math.isinf(self._fetched_at):
                log.warning("jwks_warm_up_failed", url=self.url)

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._inflight
        if self._own_client and self._client is not None:
            await self._client.aclose()
        self._client = None

    async def key_for(self, kid: str) -> RSAPublicKey:
        now = self.clock()
        if now >= self._next_refresh_at:
            refresh = self._refresh()
            if not self._usable(now):
                await asyncio.shield(refresh)
        if not self._usable(self.clock()):
            log.warning("auth_unavailable", code=AUTH_UNAVAILABLE.code)
            raise KeysUnavailable
        if kid not in self._keys:
            await self._forced_refresh()
        keys = self._keys.get(kid)
        if keys is None:
            raise TokenRejected(
                TOKEN_UNKNOWN_KEY, "The token is signed by a key the issuer does not publish."
            )
        # Two different keys under one kid: which one signed cannot be told, so neither counts.
        if len(keys) > 1:
            raise TokenRejected(
                TOKEN_AMBIGUOUS_KEY,
                "The issuer publishes two different keys under this token's kid: which one "
                "signed it cannot be told.",
            )
        return next(iter(keys.values()))

    async def refreshed_key(self, kid: str, failed: RSAPublicKey) -> RSAPublicKey | None:
        """After `failed` did not verify: refetch (cooldown permitting); the new key under `kid`."""
        await self._forced_refresh()
        keys = self._keys.get(kid, {})
        key = next(iter(keys.values())) if len(keys) == 1 else None
        return key if key is not failed else None

    def _usable(self, now: float) -> bool:
        return now - self._fetched_at <= self.max_stale

    async def _forced_refresh(self) -> None:
        """Join the fetch in flight, or start one if the cooldown allows."""
        if self._inflight is None:
            now = self.clock()
            if now - self._last_forced_at < self.cooldown:
                return
            self._last_forced_at = now
        await asyncio.shield(self._refresh())

    def _refresh(self) -> asyncio.Task[None]:
        """The fetch in flight, started if there is none (single flight)."""
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight.add_done_callback(_log_unexpected)
        return self._inflight

    async def _fetch(self) -> None:
        try:
            # One deadline for the whole answer: httpx's own timeouts are per read.
            async with asyncio.timeout(self.timeout):
                keys = parse_jwks(await self._download())
        except (httpx.HTTPError, ValueError, TimeoutError) as exc:
            self.fetches_failed += 1
            self._next_refresh_at = self.clock() + RETRY_AFTER_SECONDS
            age = self.clock() - self._fetched_at
            stale = "none" if math.isinf(age) else f"{age:.0f}s"
            log.warning(
                "jwks_fetch_failed", url=self.url, error=_describe(exc), cached_keys_age=stale
            )
            return
        finally:
            self._inflight = None
        self.fetches_ok += 1
        self._fetched_at = self.clock()
        self._next_refresh_at = self._fetched_at + self.ttl
        if _published(keys) == _published(self._keys):
            return  # the old key objects stay, so `refreshed_key` can tell a rotation
        self._keys = keys
        ambiguous = ",".join(sorted(kid for kid, k in keys.items() if len(k) > 1))
        log.info("jwks_keys_loaded", url=self.url, kids=",".join(sorted(keys)))
        if ambiguous:
            log.warning(
                "jwks_ambiguous_kid",
                "two different RS256 keys share each of these kids; tokens naming them are refused",
                url=self.url,
                kids=ambiguous,
            )
        self.on_change()

    async def _download(self) -> Any:
        assert self._client is not None, "start() makes the client"
        async with self._client.stream("GET", self.url, headers=self.headers) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksRefused("too-large")
        return json.loads(body)


def _published(keys: KeySet) -> dict[str, set[tuple[str, str]]]:
    return {kid: set(by_numbers) for kid, by_numbers in keys.items()}


def _log_unexpected(task: asyncio.Task[None]) -> None:
    # A background refresh nobody awaits must not fail silently.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("jwks_refresh_crashed", exc=exc, error=type(exc).__name__)


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"http-{exc.response.status_code}"
    if isinstance(exc, JwksRefused):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "invalid-jwks" if isinstance(exc, ValueError) else type(exc).__name__
