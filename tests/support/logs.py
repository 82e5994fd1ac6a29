"""quoteapi's log events as a test reads them back from pytest's `caplog`."""

from __future__ import annotations

import logging
from collections.abc import Iterable


def events(records: Iterable[logging.LogRecord], event: str) -> list[dict[str, object]]:
    """Each record of `event` among `records`, in order: its message and fields, as a JSON line
    shows them."""
    return [
        {"message": record.getMessage(), **fields}
        for record in records
        if (fields := getattr(record, "fields", {})).get("event") == event
    ]


def everything(records: Iterable[logging.LogRecord]) -> str:
    """Every message and field of `records` as text: to check that something is in none."""
    return "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in records)
