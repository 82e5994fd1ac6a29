"""The request and response bodies of /me/message."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi.openapi.constants import REF_TEMPLATE
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

# C0 and C1 control characters and DEL, except tab and line breaks (normalised to LF before).
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# JSON's \ud800-style escapes can carry half a surrogate pair, which no UTF-8 text (and so no
# PostgreSQL text) can hold.
_LONE_SURROGATES = re.compile(r"[\ud800-\udfff]")


def _normalise(value: object, info: ValidationInfo) -> object:
    """The quote trimmed, CRLF as LF, and within `context={"max_length": n}` if given."""
    if not isinstance(value, str):
        return value  # the str type check rejects it
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    # Before trimming: str.strip() also removes the separators U+001C to U+001F, controls that
    # must be refused, not silently dropped.
    if _CONTROL_CHARACTERS.search(text):
        raise ValueError("must not contain control characters (tab and line breaks are fine)")
    text = text.strip()
    if not text:
        raise ValueError("must not be empty or only white space")
    if _LONE_SURROGATES.search(text):
        raise ValueError("must be valid Unicode text (it contains an unpaired surrogate)")
    max_length = (info.context or {}).get("max_length")
    if max_length is not None and len(text) > max_length:
        raise ValueError(f"must be at most {max_length} characters after trimming")
    return text


# The same rules as a JSON Schema `pattern` (ECMA-262, Python and Rust regex engines agree on
# it: explicit classes, no \s), for clients and generators that read the OpenAPI document.
# Refused anywhere: the control characters above (CR is fine: it becomes LF). Not in it:
# unpaired surrogates, which no Rust regex can name (the description says so).
_REFUSED = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"
# What str.strip() trims, less what is refused anyway.
_SPACE = r"\t\n\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def message_pattern(max_length: int) -> str:
    """Acceptable quotes, unpaired surrogates aside: allowed characters only, and between 1 and
    `max_length` characters once surrounding white space is trimmed, CRLF counting as one (it
    is stored as LF)."""
    visible = f"[^{_REFUSED}{_SPACE}]"
    unit = rf"(?:\r\n|[^{_REFUSED}])"  # CRLF is one character once stored
    inner = "" if max_length == 1 else f"(?:{unit}{{0,{max_length - 2}}}{visible})?"
    return f"^[{_SPACE}]*{visible}{inner}[{_SPACE}]*$"


class MessageIn(BaseModel):
    """The body of PUT /me/message."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"additionalProperties": False})

    # No maxLength in the schema: the limit (QUOTEAPI_MESSAGE_MAX_LENGTH) applies after
    # trimming, so a longer raw string with surrounding white space is acceptable; the pattern
    # (`openapi_schema`) states the limit as it applies.
    message: Annotated[
        str,
        BeforeValidator(_normalise),
        Field(
            min_length=1,
            description="The quote: at least 1 character once surrounding white space is "
            "trimmed, and at most the service's limit (QUOTEAPI_MESSAGE_MAX_LENGTH, 1000 by "
            "default; a longer one answers 422); tab and line breaks allowed, other control "
            "characters not (`pattern` says all of this), nor unpaired surrogates. Stored "
            "trimmed, CRLF as LF. The whole request body is at most 16 KiB (413).",
            examples=["The best way to predict the future is to invent it."],
        ),
    ]

    @classmethod
    def openapi_schema(cls, max_length: int) -> dict[str, Any]:
        """The model's JSON Schema with the service's limit in the quote's `pattern`."""
        schema = cls.model_json_schema(ref_template=REF_TEMPLATE)
        schema["properties"]["message"]["pattern"] = message_pattern(max_length)
        return schema


class MessageOut(BaseModel):
    """The caller's stored quote."""

    message: str = Field(examples=["Stay hungry, stay foolish."])
    created_at: datetime = Field(description="When the quote was first saved (RFC 3339)")
    updated_at: datetime = Field(description="When it was last replaced (RFC 3339)")
