"""Helpers shared by the web application's tests (imported as ``webapp_helpers``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from reconstruction import Parameters


def small_parameters(iterations: int = 12, **changes) -> Parameters:
    """A simulated 32 px, 6 x 6 scan: a few milliseconds per iteration on a CPU."""
    params = Parameters.from_cmdstr(
        f"./ptycho -simulate=1 -size=32 -scanDims=6,6 -i={iterations} -photons=1e6 -updateProbe=2 -device=cpu"
    )
    step = params.pixel_size_m * 32 * 0.15
    return params.replace({"experiment.step_m": (step, step), **changes})



def wait_for(condition: Callable[[], object], timeout_s: float = 30.0, every_s: float = 0.02) -> object:
    """Poll ``condition`` until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")
