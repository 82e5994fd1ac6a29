"""The token-signing keys: one PEM key, or a JWKS URL's keys, cached (sources.py picks which).

A JWKS is fetched with the app's httpx client and kept `ttl` seconds, then refreshed in the
background while the old keys serve; concurrent fetches collapse into one; an unknown `kid` or
a bad signature forces at most one refetch per `cooldown`; while the source is down the last
good keys serve for up to `max_stale` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm
from jwt.exceptions import PyJWTError

from quoteapi.auth.problems import TOKEN_AMBIGUOUS_KEY, TOKEN_UNKNOWN_KEY, TokenRejected
from quoteapi.logs import EventLog

log = EventLog("quoteapi.auth")

# A JWKS holds a handful of keys (a few KiB); a bigger answer is refused, not buffered.
MAX_JWKS_BYTES = 256 * 1024

Clock = Callable[[], float]


class JwksRefused(ValueError):
    """A JWKS answer that is not used (the message is the reason logged)."""


class KeysUnavailable(Exception):
    """No usable key: the JWKS source cannot be reached and no recent keys are cached."""


class StaticKey:
    """One PEM key from the settings: every `kid` maps to it (as in Clerk's SDKs)."""

    def __init__(self, key: RSAPublicKey) -> None:
        self._key = key

    async def start(self, client: httpx.AsyncClient | None = None) -> None:
        return None

    async def close(self) -> None:
        return None

    async def key_for(self, kid: str) -> RSAPublicKey:
        return self._key

    async def refreshed_key(self, kid: str, failed: RSAPublicKey) -> RSAPublicKey | None:
        return None


@dataclass(frozen=True)
class KeySet:
    """The usable keys by `kid`, the kids two different usable keys share, and a fingerprint
    of the usable entries to tell when the set changed."""

    keys: dict[str, RSAPublicKey]
    ambiguous: frozenset[str]
    fingerprint: frozenset[tuple[str, str, str]]


def parse_jwks(document: Any) -> KeySet:
    """The keys of a JWKS document that can verify an RS256 signature. RFC 7517 lets one `kid`
    name equivalent keys of other types or uses: those are skipped, so they never make a `kid`
    ambiguous."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document")
    by_kid: dict[str, dict[tuple[str, str], RSAPublicKey]] = {}
    for entry in entries:
        key = _rs256_verification_key(entry)
        if key is not None:
            by_kid.setdefault(entry["kid"], {})[(str(entry["n"]), str(entry["e"]))] = key
    if not by_kid:
        raise ValueError("no RS256 signing keys")
    return KeySet(
        keys={kid: next(iter(keys.values())) for kid, keys in by_kid.items() if len(keys) == 1},
        ambiguous=frozenset(kid for kid, keys in by_kid.items() if len(keys) > 1),
        fingerprint=frozenset((kid, *values) for kid, keys in by_kid.items() for values in keys),
    )


def _rs256_verification_key(entry: Any) -> RSAPublicKey | None:
    """The RSA public key of a JWK meant to verify RS256 signatures (RFC 7517 `kty`, `use`,
    `alg`, `key_ops`), or None."""
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


class JwksKeys:
    """Keys from a JWKS URL, cached; see the module docstring for the refresh rules."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        ttl: float = 300.0,
        cooldown: float = 30.0,
        max_stale: float = 86400.0,
        retry_after: float = 5.0,
        timeout: float = 5.0,
        warm_up: bool = True,
        clock: Clock = time.time,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.url = url
        self._headers = dict(headers or {})
        self._ttl = ttl
        self._cooldown = cooldown
        self._max_stale = max_stale
        self._retry_after = retry_after
        self._timeout = timeout
        self._warm_up = warm_up
        self._clock = clock
        self._on_change = on_change
        self._client: httpx.AsyncClient | None = None
        self._own_client = False
        self._key_set = KeySet(keys={}, ambiguous=frozenset(), fingerprint=frozenset())
        self._fetched_at = -math.inf  # last successful fetch
        self._next_refresh_at = -math.inf  # after a success: +ttl; after a failure: +retry_after
        self._last_forced_at = -math.inf  # last refetch for an unknown kid or a bad signature
        self._inflight: asyncio.Task[None] | None = None
        # Fetches by outcome, read by /metrics at scrape time (a fetch is never on a hot path).
        self.fetches_ok = 0
        self.fetches_failed = 0

    async def start(self, client: httpx.AsyncClient | None = None) -> None:
        """Fetch with `client` (None: one of our own, closed with us) and warm the cache; a
        failure is logged, not raised."""
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=self._timeout)
        if self._warm_up:
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
        now = self._clock()
        if now >= self._next_refresh_at:
            refresh = self._refresh()
            if not self._usable(now):
                await asyncio.shield(refresh)
        if not self._usable(self._clock()):
            raise KeysUnavailable
        key = self._key_set.keys.get(kid)
        if key is None and kid not in self._key_set.ambiguous and await self._forced_refresh():
            key = self._key_set.keys.get(kid)
        # Two different keys under one kid: which one signed cannot be told, so neither counts.
        if kid in self._key_set.ambiguous:
            raise TokenRejected(
                TOKEN_AMBIGUOUS_KEY,
                "The issuer publishes two different keys under this token's kid: which one "
                "signed it cannot be told.",
            )
        if key is None:
            raise TokenRejected(
                TOKEN_UNKNOWN_KEY, "The token is signed by a key the issuer does not publish."
            )
        return key

    async def refreshed_key(self, kid: str, failed: RSAPublicKey) -> RSAPublicKey | None:
        """After a signature failed with `failed`: refetch once (cooldown permitting) and return
        the key now published under `kid` if it differs (the keys were rotated)."""
        await self._forced_refresh()
        key = self._key_set.keys.get(kid)
        return key if key is not None and key is not failed else None

    def _usable(self, now: float) -> bool:
        return now - self._fetched_at <= self._max_stale

    async def _forced_refresh(self) -> bool:
        """Join the fetch in flight, or start one if the cooldown allows; False if neither."""
        if self._inflight is None:
            now = self._clock()
            if now - self._last_forced_at < self._cooldown:
                return False
            self._last_forced_at = now
        await asyncio.shield(self._refresh())
        return True

    def _refresh(self) -> asyncio.Task[None]:
        """The fetch in flight, started if there is none (single flight)."""
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight.add_done_callback(_log_unexpected)
        return self._inflight

    async def _fetch(self) -> None:
        try:
            # One deadline for the whole answer: httpx's own timeouts are per read.
            async with asyncio.timeout(self._timeout):
                key_set = parse_jwks(await self._download())
        except (httpx.HTTPError, ValueError, TimeoutError) as exc:
            self.fetches_failed += 1
            self._next_refresh_at = self._clock() + self._retry_after
            age = self._clock() - self._fetched_at
            stale = "none" if math.isinf(age) else f"{age:.0f}s"
            log.warning(
                "jwks_fetch_failed", url=self.url, error=_describe(exc), cached_keys_age=stale
            )
            return
        finally:
            self._inflight = None
        self.fetches_ok += 1
        self._fetched_at = self._clock()
        self._next_refresh_at = self._fetched_at + self._ttl
        if key_set.fingerprint == self._key_set.fingerprint:
            return  # the old key objects stay, so `refreshed_key` can tell a rotation
        self._key_set = key_set
        kids = ",".join(sorted(key_set.keys))
        log.info("jwks_keys_loaded", url=self.url, kids=kids)
        if key_set.ambiguous:
            log.warning(
                "jwks_ambiguous_kid",
                "two different RS256 keys share each of these kids; tokens naming them are refused",
                url=self.url,
                kids=",".join(sorted(key_set.ambiguous)),
            )
        self._on_change()

    async def _download(self) -> Any:
        """The JWKS document, read at most MAX_JWKS_BYTES."""
        if self._client is None:
            raise RuntimeError("the key store is not started (no HTTP client)")
        async with self._client.stream("GET", self.url, headers=self._headers) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksRefused("too-large")
        return json.loads(body)


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
    if isinstance(exc, ValueError):
        return "invalid-jwks"
    return type(exc).__name__


# What the verifier asks of a key source.
KeyProvider = StaticKey | JwksKeys
