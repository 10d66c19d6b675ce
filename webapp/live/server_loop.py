"""The ASGI server's event loop, where the in-memory channel layer of the embedded mode lives.

Frames published from a worker thread are scheduled onto it (:mod:`webapp.live.publish`). The loop is recorded by
the launcher (``webapp.cli``) or, under a plain ``daphne`` command, by :class:`webapp.jobs.embedded.EmbeddedStarter`
on the first ASGI call.
"""

from __future__ import annotations

import asyncio

_server_loop: asyncio.AbstractEventLoop | None = None


def set_server_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    global _server_loop
    _server_loop = loop


def server_loop() -> asyncio.AbstractEventLoop | None:
    return _server_loop
