"""GPU fast paths (CuPy): fused kernels, cached cuFFT plans, CUDA graphs.

The reference engines in ``reconstruction/engines`` stay the specification; :func:`fast_engine` returns a fast
equivalent when the arrays live on a CUDA device and the run's options are ones the fast paths implement.
Nothing here imports CuPy until a GPU run asks for it, so NumPy-only machines import this package freely.

Switches (environment): ``PTYCHOPY_GPU_FAST=0`` uses the reference xp engines on the GPU too;
``PTYCHOPY_GPU_GRAPHS=0`` launches the fast kernels eagerly instead of replaying CUDA graphs.
"""

from __future__ import annotations

import os
from typing import Any

from ..engines.base import EngineSettings, EngineState


def is_cupy(xp: Any) -> bool:
    return getattr(xp, "__name__", "") == "cupy"


def fast_path_reason(algorithm: str, state: EngineState, settings: EngineSettings) -> str | None:
    """None when a fast engine applies, else why the reference engine runs instead."""
    if not is_cupy(state.xp):
        return "arrays are not CuPy arrays"
    return options_reason(algorithm, settings)


def options_reason(algorithm: str, settings: EngineSettings) -> str | None:
    """For a run on the GPU: None when its options allow a fast engine, else why they do not."""
    if os.environ.get("PTYCHOPY_GPU_FAST", "1") == "0":
        return "PTYCHOPY_GPU_FAST=0"
    if settings.compute_rms:
        return "the RMS metric is computed by the reference engines only"
    if settings.position_refinement_from > 0:
        return "position refinement runs on the reference engines"
    if settings.variable_intensity:
        return "the per-position intensity fit runs on the reference engines"
    if algorithm == "LSQML" and settings.noise_model != "gaussian":
        return f"the fast LSQML implements the Gaussian noise model, not {settings.noise_model!r}"
    if algorithm not in ("ePIE", "DM", "LSQML"):
        return f"no fast path for {algorithm}"
    return None


def fast_engine(algorithm: str, state: EngineState, settings: EngineSettings) -> Any | None:
    """A fast engine for this run, or None when the reference engine should run."""
    if fast_path_reason(algorithm, state, settings) is not None:
        return None
    from .engines import FAST_ENGINES

    return FAST_ENGINES[algorithm](state, settings)
