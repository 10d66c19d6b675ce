"""Warm a GPU process up when it starts, so that its first job's first frame does not wait for compilation.

The first GPU reconstruction in a process pays one-time costs: NVRTC compiles ``kernels/*.cu`` (one RawModule)
and every CuPy elementwise and reduction kernel the engines, the driver and the preview use (CuPy keeps the
binaries on disk in ``CUPY_CACHE_DIR``, default ``~/.cupy/kernel_cache``: a fresh machine compiles, a warm one
loads); cuFFT, cuBLAS and cuSOLVER load and create their handles; CUDA graphs are captured the first time.
:func:`warm_up` pays them before any job: it compiles the module, then runs every fast engine for two iterations
(probe modes seeded and orthogonalised, the phase constraint, the preview, the result copy) on a small simulated
scan with the pattern size of each configured size, which also creates cuFFT plans of those sizes.

A web worker calls it at boot (``webapp/worker_boot.py``); ``benchmarks/cold_start.py`` measures what it buys.
``device="cpu"`` runs the same small runs on NumPy (a dry run for tests and the benchmark's CPU mode).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WARMUP_ALGORITHMS = ("ePIE", "DM", "LSQML")
WARMUP_SCAN_DIMS = (4, 4)  # positions of each small run: enough for LSQML's mini-batches and DM's error sample
WARMUP_PROBE_MODES = 2


@dataclass(frozen=True)
class WarmupReport:
    """What :func:`warm_up` did: ``steps`` as (what, seconds); ``skipped`` says why nothing ran ("" when it
    ran); ``cache_dir``: CuPy's kernel cache directory ("" on the CPU)."""

    device: str
    seconds: float
    steps: tuple[tuple[str, float], ...] = ()
    skipped: str = ""
    cache_dir: str = ""

    def summary(self) -> str:
        """One line for a log."""
        if self.skipped:
            return f"GPU warm-up skipped: {self.skipped}"
        parts = ", ".join(f"{what} {s:.2f} s" for what, s in self.steps)
        cache = f"; kernel cache {self.cache_dir}" if self.cache_dir else ""
        return f"warm-up on {self.device} took {self.seconds:.2f} s ({parts}){cache}"


def warm_up(sizes_px: Sequence[int] = (256,), *, device: str = "gpu",
            algorithms: Sequence[str] = WARMUP_ALGORITHMS) -> WarmupReport:
    """Compile and load everything a GPU run needs, for patterns of each of ``sizes_px`` (pixels, e.g. 256).

    device: "gpu" (skipped, cheaply, where CuPy sees no CUDA device) or "cpu" (the same runs on NumPy, a dry
    run). Returns a :class:`WarmupReport`; never leaves device memory allocated (the pool is emptied).
    """
    from ..backend import get_backend, gpu_unavailable_reason

    t0 = time.perf_counter()
    sizes = [int(n) for n in sizes_px]
    bad = [n for n in sizes if n < 8]
    if bad:
        raise ValueError(f"sizes_px={list(sizes_px)}: pattern sizes must be >= 8 pixels, not {bad}")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device={device!r}: expected 'cpu' or 'gpu'")
    if device == "gpu":
        why = gpu_unavailable_reason()
        if why:
            return WarmupReport("", time.perf_counter() - t0, skipped=why)
    backend = get_backend(device)
    steps: list[tuple[str, float]] = []

    def timed(what: str, fn: Callable[[], object]) -> None:
        t = time.perf_counter()
        fn()
        steps.append((what, time.perf_counter() - t))

    cache_dir = ""
    if backend.is_gpu:
        from . import runtime as rt

        cache_dir = _cupy_cache_dir()
        timed("kernel module", rt.module)
    for n in sizes:
        for algorithm in algorithms:
            timed(f"{algorithm} {n}^2", functools.partial(_small_run, algorithm, n, device))
    if backend.is_gpu:
        backend.xp.get_default_memory_pool().free_all_blocks()
        backend.xp.get_default_pinned_memory_pool().free_all_blocks()
    return WarmupReport(backend.device, time.perf_counter() - t0, tuple(steps), cache_dir=cache_dir)


def _small_run(algorithm: str, size_px: int, device: str) -> None:
    """Two iterations of ``algorithm`` on a 4x4 simulated scan of size_px^2 patterns, with two probe modes,
    the phase constraint, a preview and the result: every kernel a job's first frame needs."""
    from ..driver import Reconstruction
    from ..engines import EngineSettings
    from ..simulate import simulate

    scan = simulate(size_px=size_px, scan_dims=WARMUP_SCAN_DIMS, photons=1e6, seed=0)
    settings = EngineSettings(update_probe_from=1, update_modes_from=2, phase_constraint=1)
    rec = Reconstruction(scan.data.intensities, scan.data.positions_px, algorithm=algorithm, iterations=2,
                         device=device, seed=0, probe_modes=WARMUP_PROBE_MODES, settings=settings,
                         beam_diameter_px=0.4 * size_px)
    try:
        for _ in rec:
            rec.preview(max_px=512)
        rec.result()
    finally:
        rec.close()


def _cupy_cache_dir() -> str:
    """CuPy's on-disk kernel cache (``CUPY_CACHE_DIR``, default ``~/.cupy/kernel_cache``)."""
    return os.environ.get("CUPY_CACHE_DIR") or os.path.expanduser(os.path.join("~", ".cupy", "kernel_cache"))
