"""Array namespace selection: NumPy on the CPU, CuPy on the GPU, one code path for both.

``get_backend("auto")`` uses CuPy when it imports and sees a CUDA device, else NumPy. ``"gpu"`` without a
device is a :class:`DeviceUnavailableError`. Engines receive ``xp`` and never import CuPy themselves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DeviceUnavailableError
from .host_allocator import keep_freed_memory


@dataclass(frozen=True)
class Backend:
    """The array module and a description of the device it runs on."""

    xp: Any
    name: str  # "cpu" or "gpu"
    device: str  # human description, e.g. "NVIDIA H100 80GB HBM3 (GPU 0)" or "CPU (NumPy 2.1)"

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    def asnumpy(self, a: Any) -> np.ndarray:
        """Copy an array to the host (a no-op view for NumPy)."""
        if self.is_gpu:
            return self.xp.asnumpy(a)
        return np.asarray(a)

    def free_memory_bytes(self) -> int | None:
        """Free device memory (GPU) plus what CuPy's pool holds; None on the CPU."""
        if not self.is_gpu:
            return None
        free, _total = self.xp.cuda.runtime.memGetInfo()
        pool = self.xp.get_default_memory_pool()
        return int(free + pool.free_bytes())

    def synchronize(self) -> None:
        if self.is_gpu:
            self.xp.cuda.get_current_stream().synchronize()


def is_cupy_array(a: Any) -> bool:
    """True when ``a`` is a CuPy array (read from its type's module, so CuPy need not be importable here)."""
    return type(a).__module__.split(".")[0] == "cupy"


@functools.lru_cache(maxsize=1)
def _cupy_status() -> tuple[Any, str]:
    try:
        import cupy  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return None, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy sees no CUDA device ({type(exc).__name__}: {exc})"
    if n < 1:
        return None, "CuPy sees no CUDA device"
    return cupy, ""


def gpu_available() -> bool:
    return _cupy_status()[0] is not None


def gpu_unavailable_reason() -> str:
    """"" when CuPy imports and sees a CUDA device, else why not (one sentence)."""
    return _cupy_status()[1]


def get_backend(device: str = "auto") -> Backend:
    """The backend for ``device`` in {"auto", "cpu", "gpu"}."""
    device = (device or "auto").lower()
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device={device!r}: expected 'auto', 'cpu' or 'gpu'")
    if device in ("auto", "gpu"):
        cupy, why = _cupy_status()
        if cupy is not None:
            dev = cupy.cuda.Device()
            props = cupy.cuda.runtime.getDeviceProperties(dev.id)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            return Backend(cupy, "gpu", f"{name} (GPU {dev.id})")
        if device == "gpu":
            raise DeviceUnavailableError(f"device='gpu' was requested but {why}; use device='cpu' or 'auto'")
    keep_freed_memory()  # NumPy temporaries: no page faults per array operation (see host_allocator)
    return Backend(np, "cpu", f"CPU (NumPy {np.__version__})")
