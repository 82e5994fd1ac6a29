"""What a request head must be before any app sees it, and what it says of its body (pure: the
protocol calls these with the header fields uvicorn collected, names lower-cased)."""

from __future__ import annotations

import re

Headers = list[tuple[bytes, bytes]]

# RFC 3986's host [ ":" port ]: an IP literal in brackets, or a reg-name (unreserved,
# percent-encoded and sub-delims characters; an IPv4 address is one too), then digits.
_HOST = re.compile(
    rb"(\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(:[0-9]*)?"
)


def host_problem(http_version: str, headers: Headers) -> str | None:
    """Why the request's Host header breaks RFC 9112 section 3.2, or None: an HTTP/1.1 request
    carries exactly one, any request at most one (two could route it two ways), and its value is
    a host and port (RFC 3986), nothing else."""
    hosts = [value for name, value in headers if name == b"host"]
    if len(hosts) > 1:
        return f"Send one Host header; this request has {len(hosts)} (RFC 9112, section 3.2)."
    if not hosts and http_version == "1.1":
        return "An HTTP/1.1 request must carry a Host header (RFC 9112, section 3.2)."
    if hosts and _HOST.fullmatch(hosts[0]) is None:
        return "The Host header must be a host name or address and a port (RFC 9112, 3.2)."
    return None


def coding_problem(headers: Headers) -> str | None:
    """Why the request's Transfer-Encoding asks for what this server does not do, or None: it
    decodes `chunked` only (RFC 9112, section 6.1: any other coding is 501)."""
    codings = [
        coding.strip().lower()
        for name, value in headers
        if name == b"transfer-encoding"
        for coding in value.split(b",")
    ]
    if any(coding != b"chunked" for coding in codings):
        return "Only the chunked transfer coding is accepted; send the body without others."
    return None


def has_body(headers: Headers) -> bool:
    """The head announces a body (a Content-Length above 0, or a transfer coding)."""
    return any(
        (name == b"content-length" and value.strip() not in (b"0", b""))
        or name == b"transfer-encoding"
        for name, value in headers
    )
