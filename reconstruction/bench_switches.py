"""Benchmark-only switches: environment variables that turn one optimisation off to measure what it buys.

None of them changes what a run computes (the result is the same up to float32 rounding); none is read for any
decision of the run plan (:mod:`reconstruction.run_plan`). Each is named ``PTYCHOPY_BENCH_<NAME>``; the set is
:data:`SWITCHES`, listed with what "0" does in docs/performance.md. Product runs leave them unset.
"""

from __future__ import annotations

import os

PREFIX = "PTYCHOPY_BENCH_"

#: name -> what setting it to "0" does (default: "1", the optimisation on, unless the entry names another default)
SWITCHES: dict[str, str] = {
    "GPU_GRAPHS": "the fast GPU engines launch their kernels eagerly instead of replaying CUDA graphs",
    "EPIE_FUSED": "fast ePIE runs each step as five launches, not fusing the update with the next gather",
    "EPIE_COLS": "fast ePIE uses cuFFT's 2-D transforms instead of the column kernel (64^2-256^2)",
    "DM_LANES": "fast DM runs its chunks on this many streams (1 or 2; default 2)",
    "HOST_MALLOC": "the NumPy backend leaves glibc's mmap and trim thresholds alone",
    "LSQML_FITS_FUSED": "fast LSQML's sub-pixel windows run the first schedule: per-pixel ramps, a probe copy before "
                        "its transform, the probe sums in two launches, one stream (default 0 until measured on a "
                        "GPU: 1 selects the fused schedule, gpu/lsqml_fits.py)",
}


def bench_switch(name: str, default: str = "1") -> str:
    """The value of ``PTYCHOPY_BENCH_<name>`` (``default`` when unset); ``name`` must be in :data:`SWITCHES`."""
    if name not in SWITCHES:
        raise KeyError(f"unknown benchmark switch {name!r}: expected one of {', '.join(SWITCHES)}")
    return os.environ.get(PREFIX + name, default)


def bench_switch_on(name: str) -> bool:
    """False when ``PTYCHOPY_BENCH_<name>=0`` turns the optimisation off, else True."""
    return bench_switch(name) != "0"
