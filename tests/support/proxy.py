"""A reverse proxy on loopback as a facility's TLS proxy behaves towards Daphne (for the login-throttling tests).

Each request is forwarded to ``upstream`` with the client's address appended to ``X-Forwarded-For`` (nginx's
``$proxy_add_x_forwarded_for``: whatever the client sent, then its address); it speaks plain http (TLS is not
what these tests look at). Clients reach it from different loopback addresses (127.0.0.2, 127.0.0.3, ...: see
:class:`tests.support.web.WebClient`'s ``source_ip``), so Daphne sees one peer, the proxy, for all of them.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .net import LOOPBACK, free_port

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}


class _Forward(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet: the upstream logs the requests
        return

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        prior = self.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {self.client_address[0]}" if prior else self.client_address[0]
        conn = http.client.HTTPConnection(LOOPBACK, self.server.upstream_port, timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status, resp.reason)
            for key, value in resp.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_POST = do_HEAD = _forward


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, upstream_port: int) -> None:
        super().__init__((LOOPBACK, port), _Forward)
        self.upstream_port = upstream_port


class ReverseProxy:
    """``with ReverseProxy(daphne_port) as proxy:`` forwards ``LOOPBACK:proxy.port`` to Daphne."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self._server = _ProxyServer(self.port, upstream_port)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True, name=f"reverse-proxy-{self.port}")

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> ReverseProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
