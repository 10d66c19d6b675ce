"""Free loopback ports and waiting for them."""

from __future__ import annotations

import socket
import subprocess
import time

from benchmarks.latency.procs import LOOPBACK, free_port  # one record of handed-out ports for tests and rigs

__all__ = ["LOOPBACK", "free_port", "port_open", "wait_for_port", "wait_port_closed"]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int,
    *,
    timeout: float = 30.0,
    host: str = LOOPBACK,
    proc: subprocess.Popen[bytes] | None = None,
    what: str = "server",
) -> None:
    """Wait until something accepts connections on ``port``; fail early if ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before listening on {host}:{port}")
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")


def wait_port_closed(port: int, *, timeout: float = 10.0, host: str = LOOPBACK) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not port_open(port, host):
            return True
        time.sleep(0.05)
    return False
