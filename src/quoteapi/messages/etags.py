"""ETags of a stored quote and the If-Match / If-None-Match lists that name them (pure).

A quote's ETag is its version in quotes (`"42"`); a version is never reused, so a tag names
one quote as it was at one moment, whoever holds it."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Entity-tags compare character by character (RFC 9110, section 8.8.3.2): only the form `etag`
# writes names a version (`"07"` is not `"7"`), and only up to PostgreSQL's bigint.
_TAG = re.compile(r'(W/)?"(0|[1-9][0-9]{0,18})"')
_MAX_VERSION = 2**63 - 1


def etag(version: int) -> str:
    return f'"{version}"'


@dataclass(frozen=True)
class TagList:
    """An If-Match or If-None-Match header: `*` (any stored quote), or the versions it names
    (tags that name no version of ours are left out). `*` counts only as the whole value, as
    RFC 9110's grammar (`"*" / #entity-tag`) has it: among tags it names nothing."""

    any: bool
    versions: tuple[int, ...]

    @classmethod
    def parse(cls, header: str, *, strong: bool = False) -> TagList:
        """`strong`: compare as If-Match does (RFC 9110, section 13.1.1), where a weak tag
        matches nothing; If-None-Match compares weakly, `W/"7"` as `"7"`."""
        if header.strip() == "*":
            return cls(any=True, versions=())
        versions = []
        for tag in header.split(","):
            found = _TAG.fullmatch(tag.strip())
            if found and not (strong and found[1]) and int(found[2]) <= _MAX_VERSION:
                versions.append(int(found[2]))
        return cls(any=False, versions=tuple(versions))

    def matches(self, version: int) -> bool:
        return self.any or version in self.versions
