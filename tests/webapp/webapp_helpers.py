"""Helpers shared by the web application's tests (imported as ``webapp_helpers``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from reconstruction import Parameters


def small_parameters(iterations: int = 12, **changes) -> Parameters:
    """A simulated 32 px, 6 x 6 scan: a few milliseconds per iteration on a CPU."""
    params = Parameters.from_cmdstr(
        f"./ptycho -simulate=1 -size=32 -scanDims=6,6 -i={iterations} -photons=1e6 -updateProbe=2 -device=cpu"
    )
    step = params.pixel_size_m * 32 * 0.15
    return params.replace({"experiment.step_m": (step, step), **changes})



def api_auth(key: str) -> dict:
    """The test client's headers for the API token ``key``."""
    return {"HTTP_AUTHORIZATION": f"Token {key}"}


def api_post(client, path, body, key, idempotency_key=None):
    """POST ``body`` as JSON with the token ``key`` (and an ``Idempotency-Key`` header when given)."""
    headers = api_auth(key)
    if idempotency_key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = idempotency_key
    return client.post(path, json.dumps(body), content_type="application/json", **headers)


def wait_for(condition: Callable[[], object], timeout_s: float = 30.0, every_s: float = 0.02) -> object:
    """Poll ``condition`` until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def stop_worker_when(broker, condition: Callable[[], object]) -> float:
    """Start a worker like the embedded one, stop it (Dramatiq's shutdown, as on SIGTERM) once ``condition()``
    holds; the seconds ``stop`` took (the worker's thread joined: the running job ended)."""
    from dramatiq import Worker

    from webapp.jobs import runner

    w = Worker(broker, queues={"reconstruct"}, worker_threads=1, worker_timeout=50)
    w.start()
    try:
        wait_for(condition, timeout_s=60)
    finally:
        t0 = time.monotonic()
        w.stop(timeout=10_000)  # the embedded stop's grace (webapp.jobs.embedded.stop_worker)
        stop_s = time.monotonic() - t0
        runner.clear_stop()
    return stop_s


def dead_pid() -> int:
    """A process id no process can have (one past the kernel's pid_max), for a worker that has died."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    except (OSError, ValueError):
        return 2**22 + 1  # Linux's largest pid_max is 2**22
