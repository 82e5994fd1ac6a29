"""The quote's JSON Schema `pattern` says exactly what the service accepts: a string matches it
if and only if PUT /me/message would take it (for any limit), so that clients and generators
reading the OpenAPI document can know every rule. The one rule it leaves to the description:
no unpaired surrogates (no Rust regex, as schemathesis uses, can name them)."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from quoteapi.messages.schemas import MessageIn, message_pattern

# Characters on either side of each rule: white space str.strip() trims, controls refused,
# CR and CRLF (stored as LF), a BOM (kept), and plain and astral text.
_EDGES = "\t\n\r\x0b\x0c\x1c\x1f \x7f\x85\xa0\u1680\u2028\u3000\ufeff a😀"
_TEXT = st.text(st.sampled_from(_EDGES) | st.characters(exclude_categories=["Cs"]), max_size=12)
_SURROGATES = range(0xD800, 0xE000)


def _accepted(text: str, max_length: int) -> bool:
    try:
        MessageIn.model_validate({"message": text}, context={"max_length": max_length})
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("max_length", [1, 2, 5])
@settings(max_examples=1500, deadline=None)
@given(text=_TEXT)
@example(text="\r\n a\r\nb\r\nc \r\n")
@example(text="\r\r\nab")
def test_the_pattern_matches_exactly_what_the_service_accepts(max_length: int, text: str) -> None:
    matches = re.search(message_pattern(max_length), text) is not None
    assert matches == _accepted(text, max_length)


@pytest.mark.parametrize("template", ["{}", "a{}", "a{}b"])
def test_every_bmp_character_is_judged_alike_by_the_pattern_and_the_service(
    template: str,
) -> None:
    pattern = re.compile(message_pattern(3))
    for code in (c for c in range(0x10000) if c not in _SURROGATES):
        text = template.format(chr(code))
        assert (pattern.search(text) is not None) == _accepted(text, 3), hex(code)
