"""The estimate a stochastic engine reports: an exponential mean of its iterates.

LSQML's mini-batches each take a full step on their own data; what one model cannot fit (noise, partial coherence)
each batch fits differently, so the object and probe jitter about the solution from epoch to epoch at a floor set by
the step (benchmarks/RESULTS.md, "LSQML's stochastic floor on measured data"). The mean of the last few iterates
averages that jitter out while the engine keeps its full step, so slow convergence (a smooth object's low spatial
frequencies) keeps its pace, which halving the step (``-betaDecay``) does not.

The engine iterates on ``EngineState.obj`` and ``probe`` as before; the run reports (shows live, writes, exports)
the mean. Object and probe are averaged together: they are one model (the mean of the object alone, with the
newest probe, fits the measured data worse than either iterate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import is_cupy_array

#: epochs at the start reported as they are (the first iterates change too fast to be averaged)
FIRST_AVERAGED_EPOCH = 6


def mean_weight(span: int) -> float:
    """The weight of the newest iterate in an exponential mean of span ``span`` (>= 1): 2 / (span + 1)."""
    if span < 1:
        raise ValueError(f"mean span {span}: it must be at least 1 (1 = the newest iterate alone)")
    return 2.0 / (span + 1.0)


@dataclass
class IterateMean:
    """Exponential mean of the object (H, W) and probe (M, n, n) complex64 iterates, device arrays of ``xp``.

    Updated in place (no allocation per epoch: one fused pass per array on the GPU, :func:`lerp_inplace`).
    Restarted from the iterate when the probe's modes change (a seeded mode has no history to average with) and in
    the first epochs.
    """

    weight: float
    obj: Any
    probe: Any
    modes_active: int = 1
    epochs: int = 0

    @classmethod
    def start(cls, xp: Any, obj: Any, probe: Any, span: int) -> IterateMean:
        """A mean of span ``span`` (epochs) holding copies of ``obj`` and ``probe`` (allocated once, here)."""
        return cls(weight=mean_weight(span), obj=xp.array(obj, copy=True), probe=xp.array(probe, copy=True))

    def update(self, obj: Any, probe: Any, modes_active: int, epoch: int) -> None:
        """Take epoch ``epoch``'s iterate (1-based): mean = (1 - w) mean + w iterate, or the iterate itself in the
        first epochs and when the active modes changed."""
        self.epochs += 1
        restart = epoch < FIRST_AVERAGED_EPOCH or modes_active != self.modes_active
        self.modes_active = modes_active
        for mean, new in ((self.obj, obj), (self.probe, probe)):
            if restart:
                mean[...] = new
            else:
                lerp_inplace(mean, new, self.weight)


def lerp_inplace(mean: Any, new: Any, weight: float) -> None:
    """mean += weight (new - mean), in place, for complex64 arrays of one shape (NumPy or CuPy), no allocation.

    On CuPy one fused pass (``lerp_c64``, kernels/generic.cu) for contiguous complex64 arrays; else three in-place
    passes ((mean - new) (1 - w) + new)."""
    fused = (is_cupy_array(mean) and mean.dtype == new.dtype == np.complex64
             and mean.shape == new.shape and mean.flags.c_contiguous and new.flags.c_contiguous)
    if fused:
        from .gpu.common import lerp_c64

        lerp_c64(mean, new, weight)
        return
    mean -= new
    mean *= 1.0 - weight
    mean += new
