"""Verified session tokens, remembered so that a reused token costs no signature check."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quoteapi.auth.verify import VerifiedUser


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
