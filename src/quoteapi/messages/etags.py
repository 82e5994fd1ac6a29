"""ETags of a stored quote and the If-Match / If-None-Match lists that name them (pure).

A quote's ETag is its version in quotes (`"42"`); a version is never reused, so a tag names
one quote as it was at one moment, whoever holds it."""

from __future__ import annotations

from dataclasses import dataclass

# Versions are PostgreSQL bigints: a tag naming a larger number (or non-ASCII digits, which
# str.isdigit accepts and int() may not) names no stored version.
_MAX_VERSION = 2**63 - 1


def etag(version: int) -> str:
    """The strong ETag of `version`."""
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
            tag = tag.strip()
            if tag.startswith("W/"):
                if strong:
                    continue
                tag = tag.removeprefix("W/")
            digits = tag[1:-1] if len(tag) >= 2 and tag[0] == tag[-1] == '"' else ""
            version = _version(digits)
            if version is not None:
                versions.append(version)
        return cls(any=False, versions=tuple(versions))

    def matches(self, version: int) -> bool:
        """Whether a stored quote at `version` satisfies the list."""
        return self.any or version in self.versions


def _version(digits: str) -> int | None:
    """The version an opaque-tag's `digits` name, if any. Entity-tags compare character by
    character (RFC 9110, section 8.8.3.2), so only the form `etag` writes names one: `"07"`
    is not `"7"`."""
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        return None
    version = int(digits)
    return version if version <= _MAX_VERSION and str(version) == digits else None
