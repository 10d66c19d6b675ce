"""A real SMTP server on loopback that keeps what it receives (for the password-reset tests).

It speaks the plain subset of RFC 5321 that Django's SMTP backend uses without TLS or login: EHLO/HELO, MAIL,
RCPT, DATA (dot-stuffing undone), RSET, NOOP, QUIT. Each accepted mail is kept as an
:class:`email.message.EmailMessage` in :attr:`SmtpSink.messages`.
"""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading
import time
from email.message import EmailMessage

from .net import LOOPBACK, free_port


class _Session(socketserver.StreamRequestHandler):
    server: _Server

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())
        self.wfile.flush()

    def handle(self) -> None:
        self.reply(f"220 {LOOPBACK} ptychopy-test-smtp")
        while True:
            raw = self.rfile.readline(65536)
            if not raw:
                return
            verb = raw.decode("latin1").strip().split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-ptychopy-test-smtp")
                self.reply("250 8BITMIME")
            elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                lines = []
                while True:
                    line = self.rfile.readline(1 << 20)
                    if not line or line in (b".\r\n", b".\n"):
                        break
                    lines.append(line[1:] if line.startswith(b"..") else line)
                message = email.message_from_bytes(b"".join(lines), policy=email.policy.default)
                with self.server.lock:
                    self.server.messages.append(message)  # type: ignore[arg-type]
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__((LOOPBACK, port), _Session)
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()


class SmtpSink:
    """``with SmtpSink() as smtp:`` a server on ``LOOPBACK:smtp.port`` until the block ends."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = _Server(self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True, name=f"smtp-sink-{self.port}")

    @property
    def messages(self) -> list[EmailMessage]:
        with self._server.lock:
            return list(self._server.messages)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[EmailMessage]:
        """The first ``count`` mails, waiting up to ``timeout`` seconds for them."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.messages)} of {count} mail(s) arrived within {timeout:.0f} s")
            time.sleep(0.05)
        return self.messages[:count]

    def __enter__(self) -> SmtpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
