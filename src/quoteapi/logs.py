"""Log set-up: one JSON object per line for `serve`, readable lines for `dev`. Every line is an
event with fields; one written during a request carries its `request_id` (and, when tracing is
on, the span's ids)."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

_JSON = json.JSONEncoder(default=str)

# Set by RequestContextMiddleware for the duration of a request.
current_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class EventLog:
    """A logger of events: `log.info("token_rejected", code=problem.code)` logs the event
    `token_rejected` with the field `code`; a second argument, a short sentence for an operator
    (what to fix), is the message, else the event's name. No token, secret, quote text or SQL
    parameter value in either."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def debug(self, event: str, message: str | None = None, /, **fields: object) -> None:
        self._log(logging.DEBUG, event, message, None, fields)

    def info(self, event: str, message: str | None = None, /, **fields: object) -> None:
        self._log(logging.INFO, event, message, None, fields)

    def warning(self, event: str, message: str | None = None, /, **fields: object) -> None:
        self._log(logging.WARNING, event, message, None, fields)

    def error(
        self,
        event: str,
        message: str | None = None,
        /,
        exc: BaseException | None = None,
        **fields: object,
    ) -> None:
        self._log(logging.ERROR, event, message, exc, fields)  # with `exc`'s traceback

    def _log(
        self,
        level: int,
        event: str,
        message: str | None,
        exc: BaseException | None,
        fields: dict[str, object],
    ) -> None:
        logger = self.logger
        if logger.isEnabledFor(level):
            # makeRecord, not logger.log: no walk up the stack for a file and line no line shows.
            exc_info = None if exc is None else (type(exc), exc, exc.__traceback__)
            record = logger.makeRecord(logger.name, level, "", 0, message or event, (), exc_info)
            record.fields = {"event": event, **fields}
            logger.handle(record)


def _add_context(fields: dict[str, object]) -> dict[str, object]:
    during = current_request_id.get()
    if during is not None:
        fields["request_id"] = during
    # Only with tracing on (FastAPI imports OpenTelemetry's API anyway; the SDK only tracing).
    if "opentelemetry.sdk.trace" in sys.modules:
        from opentelemetry import trace

        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            fields["trace_id"], fields["span_id"] = f"{span.trace_id:032x}", f"{span.span_id:016x}"
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _JSON.encode(_add_context(entry))


class ReadableFormatter(logging.Formatter):
    """`LEVEL logger: message key=value ...`; no message when it is only the event's name."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _add_context(dict(getattr(record, "fields", {})))
        message = record.getMessage()
        line = f"{record.levelname:<7} {record.name}:"
        if message != fields.get("event"):
            line += f" {message}"
        line += "".join(f" {key}={value}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(*, json_lines: bool) -> None:
    """Route every logger (ours, uvicorn's, SQLAlchemy's) through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else ReadableFormatter())
    # No formatter here shows the thread or process: do not look them up for every record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(handlers=[handler], level=logging.INFO, force=True)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
