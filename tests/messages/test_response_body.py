"""The quote's JSON is exactly what the documented model (MessageOut) would serialise."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from quoteapi.messages.repository import StoredMessage
from quoteapi.messages.router import _quote_response
from quoteapi.messages.schemas import MessageOut


@pytest.mark.parametrize("microsecond", [0, 5, 123400, 999999])
def test_the_quote_body_matches_the_response_model_to_the_character(microsecond: int) -> None:
    moment = datetime(2026, 11, 26, 9, 30, 0, microsecond, tzinfo=UTC)
    stored = StoredMessage("Carpe diem. ✓", moment, moment.replace(second=7), version=3)
    model = MessageOut(
        message=stored.message, created_at=stored.created_at, updated_at=stored.updated_at
    )
    body = bytes(_quote_response(stored).body)
    assert json.loads(body) == model.model_dump(mode="json")
