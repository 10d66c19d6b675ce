"""A small Channel Access client for the simulated IOC (tests, benchmarks, demos): caproto's sync client, run
in a given CA environment, with the UDP name search retried.

caproto's sync client reads the CA environment at each call, so each call sets ``env`` and restores the old
values afterwards (a leaked ``EPICS_CA_SERVER_PORT`` would point later processes at a dead IOC). Its name search
is one UDP datagram resent within ``timeout``; an IOC whose event loop is busy (a loaded 2-core CI machine)
can miss that window although it is healthy. A search that timed out never reached the IOC, so it is safe to
search again, for reads and writes alike; a timeout after the channel was found is raised at once for a write
(the write may have happened) and retried for a read.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

SEARCH_FAILED = "from the search for"  # in the message of caproto's CaprotoTimeoutError for a failed search


@contextlib.contextmanager
def ca_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Set the CA variables of ``env`` in ``os.environ`` for the block, then restore the previous values."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _with_retries(call: Callable[[], T], what: str, attempts: int, idempotent: bool) -> T:
    from caproto import CaprotoTimeoutError

    for attempt in range(1, attempts + 1):
        try:
            return call()
        except CaprotoTimeoutError as exc:
            retry = idempotent or SEARCH_FAILED in str(exc)
            if not retry or attempt == attempts:
                raise TimeoutError(f"Channel Access {what}: no answer after {attempt} attempt(s): {exc}") from exc
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _decode(data: Any) -> Any:
    if getattr(data, "dtype", None) is not None and data.dtype.kind == "u" and data.dtype.itemsize == 1:
        return bytes(data).rstrip(b"\0").decode("latin-1")  # a char waveform holding a string
    value = data[0] if len(data) == 1 else data
    return value.decode() if isinstance(value, bytes) else value


def ca_get(name: str, env: Mapping[str, str], timeout_s: float = 2.0, attempts: int = 3) -> Any:
    """The value of PV ``name``: a scalar, a string (also from a char waveform) or an array."""
    from caproto.sync.client import read

    with ca_environment(env):
        resp = _with_retries(lambda: read(name, timeout=timeout_s, repeater=False), f"read of {name}",
                             attempts, idempotent=True)
    return _decode(resp.data)


def ca_get_with_timestamp(name: str, env: Mapping[str, str], timeout_s: float = 2.0,
                          attempts: int = 3) -> tuple[Any, float]:
    """PV ``name``'s first element and the IOC's time stamp of its last change (POSIX seconds)."""
    from caproto import ChannelType
    from caproto.sync.client import read

    with ca_environment(env):
        resp = _with_retries(
            lambda: read(name, data_type=ChannelType.TIME_LONG, timeout=timeout_s, repeater=False),
            f"read of {name}", attempts, idempotent=True)
    return resp.data[0], float(resp.metadata.timestamp)


def ca_put(name: str, value: Any, env: Mapping[str, str], timeout_s: float = 2.0, attempts: int = 3) -> None:
    """Write ``value`` to PV ``name`` and wait for the IOC's completion (put-callback)."""
    from caproto.sync.client import write

    with ca_environment(env):
        _with_retries(lambda: write(name, value, timeout=timeout_s, repeater=False, notify=True),
                      f"write of {name}", attempts, idempotent=False)
