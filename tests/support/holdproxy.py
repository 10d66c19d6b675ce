"""A reverse proxy on loopback that can withhold one answer: the server has done the work, the client never
hears of it (what a client killed between sending a request and reading the answer, or a network cut at that
moment, leaves behind).

Every request is forwarded to ``upstream`` as it came (method, path, body, the headers that matter) and
recorded with the server's status; after :meth:`HoldingProxy.hold_next` the next request to ``hold_path`` is
forwarded, its answer recorded and kept back (``held`` is set), and the connection is closed without an answer
once :meth:`release` is called.
"""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass

from .net import LOOPBACK, free_port

FORWARDED_HEADERS = ("Authorization", "Content-Type", "Accept", "Idempotency-Key")


@dataclass
class Exchange:
    """One request through the proxy: what was asked and what the server answered."""

    method: str
    path: str
    idempotency_key: str
    status: int
    withheld: bool


class HoldingProxy:
    def __init__(self, upstream: str, hold_path: str = "/api/v1/jobs/"):
        self.upstream = upstream.rstrip("/")
        self.hold_path = hold_path
        self.exchanges: list[Exchange] = []
        self.held = threading.Event()
        self._armed = False
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._server = http.server.ThreadingHTTPServer((LOOPBACK, free_port()), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="holding-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/"

    def start(self) -> HoldingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def hold_next(self) -> None:
        """Withhold the answer to the next request to ``hold_path``."""
        with self._lock:
            self._armed, self._release = True, threading.Event()
            self.held.clear()

    def release(self) -> None:
        """Close the held connection without an answer."""
        self._release.set()

    def posts(self, path: str) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.method == "POST" and e.path == path]

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes,
                                                                                                     str]:
        req = urllib.request.Request(self.upstream + path, data=body, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=30) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read(), err.headers.get("Content-Type", "")

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {h: self.headers[h] for h in FORWARDED_HEADERS if self.headers.get(h)}
                status, data, ctype = proxy._forward(self.command, self.path, headers, body)
                with proxy._lock:
                    hold = proxy._armed and self.path == proxy.hold_path
                    if hold:
                        proxy._armed = False
                    release = proxy._release
                    proxy.exchanges.append(Exchange(self.command, self.path, headers.get("Idempotency-Key", ""),
                                                    status, hold))
                if hold:
                    proxy.held.set()
                    release.wait(60)
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _relay  # noqa: N815 (http.server's names)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
