"""A real JWKS endpoint on loopback: counts what it serves, rotates, goes down, comes back."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.polling import wait_until
from tests.support.processes import answers_200
from tests.support.tokens import SigningKey


class JwksServer:
    """A JWKS endpoint on 127.0.0.1, served from a thread, restartable on the same port."""

    PATH = "/.well-known/jwks.json"

    def __init__(self, *keys: SigningKey) -> None:
        self._lock = threading.Lock()
        self._keys: tuple[SigningKey, ...] = keys
        self._other_entries: tuple[dict[str, Any], ...] = ()
        self._fetches = 0
        self._port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.PATH}"

    @property
    def fetches(self) -> int:
        """How many times the JWKS has been served."""
        with self._lock:
            return self._fetches

    def publish(self, *keys: SigningKey, other_entries: Sequence[dict[str, Any]] = ()) -> None:
        """Serve these keys from now on (a rotation), and after them `other_entries` as they
        are (keys of other types or uses, malformed entries)."""
        with self._lock:
            self._keys, self._other_entries = keys, tuple(other_entries)

    def start(self) -> None:
        """Listen (again, on the same port after a `stop`) and return once it answers."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/ready":
                    body = b"ok"
                elif self.path == JwksServer.PATH:
                    with server._lock:
                        server._fetches += 1
                        entries = [*(k.jwk for k in server._keys), *server._other_entries]
                        body = json.dumps({"keys": entries}).encode()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        self._port = self._httpd.server_address[1]
        # A short poll interval makes `stop` quick (shutdown waits for the loop to notice).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        ready = f"http://127.0.0.1:{self._port}/ready"
        wait_until(lambda: answers_200(ready), within=10, what=f"{ready} answering 200")

    def stop(self) -> None:
        """Stop listening: connections are refused until `start`."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join()
            self._httpd = None
