"""A test's own small HTTP server (http.server) answering JSON, quietly."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


class JsonHandler(BaseHTTPRequestHandler):
    """http.server's request handler with :meth:`send_json`; it logs nothing."""

    def send_json(self, status: int, body: object) -> None:
        """Answer ``status`` with ``body`` as JSON."""
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass
