"""Exceptions the engines and loaders raise; each message says what went wrong and where."""

from __future__ import annotations


class ReconstructionError(Exception):
    """Base class of ptychopy's reconstruction errors."""


class InputDataError(ReconstructionError, ValueError):
    """Diffraction data, positions, probe or object that cannot be used (wrong shape, NaN, negative...)."""


class DeviceUnavailableError(ReconstructionError, RuntimeError):
    """A GPU was requested but CuPy or a CUDA device is not available."""


class DeviceMemoryError(ReconstructionError, MemoryError):
    """The run does not fit in the device's memory. ``needed_bytes`` is the estimate for the whole run."""

    def __init__(self, message: str, needed_bytes: int, available_bytes: int | None = None):
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes


class SessionStateError(ReconstructionError, RuntimeError):
    """A step-mode call in the wrong state (step before init, result after post...)."""


class HostMemoryError(ReconstructionError, MemoryError):
    """The run does not fit in the host memory it may use (checked before any allocation; see
    ``memory_plan.plan_host_memory``). ``needed_bytes``: the estimate; ``available_bytes``: the limit."""

    def __init__(self, message: str, needed_bytes: int, available_bytes: int):
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
