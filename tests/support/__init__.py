"""Test harness: real PostgreSQL, Redis, Daphne and Dramatiq processes on loopback.

Everything here is idempotent and cleaned up at the end of the test session (and at interpreter exit as a
fallback), whether the tests passed or not. A missing prerequisite (a server binary, Chromium) raises
:class:`PrerequisiteMissing` with a message saying how to install it; fixtures turn that into a test failure.
"""

from .net import free_port, port_open, wait_for_port, wait_port_closed
from .services import (
    PostgresServer,
    PrerequisiteMissing,
    RedisServer,
    ensure_postgres,
    ensure_redis,
    stop_all_services,
)

__all__ = [
    "PostgresServer",
    "PrerequisiteMissing",
    "RedisServer",
    "ensure_postgres",
    "ensure_redis",
    "free_port",
    "port_open",
    "stop_all_services",
    "wait_for_port",
    "wait_port_closed",
]
