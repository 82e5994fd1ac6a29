"""quoteapi.http_protocol subclasses uvicorn's httptools protocol: these are the internals it
relies on. A uvicorn upgrade that changes them fails here, loudly, before any behaviour test."""

import inspect

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from quoteapi.http_protocol import GuardedHttpToolsProtocol

OVERRIDDEN = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
)


def test_the_guarded_protocol_overrides_only_methods_uvicorn_still_has() -> None:
    for name in OVERRIDDEN:
        assert callable(getattr(HttpToolsProtocol, name, None)), name
        assert name in vars(GuardedHttpToolsProtocol), name


def test_uvicorn_still_builds_status_lines_for_the_refusals() -> None:
    assert STATUS_LINE[400].startswith(b"HTTP/1.1 400")
    assert STATUS_LINE[408].startswith(b"HTTP/1.1 408")
    assert STATUS_LINE[431].startswith(b"HTTP/1.1 431")


def test_uvicorn_protocol_still_keeps_transport_loop_and_logger() -> None:
    source = inspect.getsource(HttpToolsProtocol)
    for attribute in (
        "self.transport",
        "self.loop",
        "self.logger",
        "self.cycle",
        "self.pipeline",
        "def _unset_keepalive_if_required",
    ):
        assert attribute in source, attribute
