"""What of the GPU fast paths can be checked without a GPU: the package imports on NumPy-only machines, the
engine factory builds the reference engines by default, and the kernels the engines launch are exactly those in
kernels/*.cu."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from reconstruction.engines import ENGINES, EngineSettings, EngineState, create_engine
from reconstruction.gpu.runtime import KERNEL_DIR, kernel_names


def _state() -> EngineState:
    n = 8
    return EngineState(xp=np, obj=np.ones((12, 12), np.complex64), probe=np.ones((1, n, n), np.complex64),
                       amplitudes=np.ones((2, n, n), np.float32), valid=None, rows=np.array([0, 4]),
                       cols=np.array([0, 4]), rng=np.random.default_rng(0))


def test_numpy_state_gets_the_reference_engines():
    st = _state()
    for name, cls in ENGINES.items():
        assert type(create_engine(name, st, EngineSettings())) is cls


def test_every_launched_kernel_is_defined_and_every_defined_kernel_is_launched():
    defined = set(kernel_names())
    engines_src = "\n".join(p.read_text() for p in Path(KERNEL_DIR).parent.glob("*.py"))
    launched = set(re.findall(r'rt\.(?:launch(?:_jp)?|kernel)\(\s*"(\w+)"', engines_src))
    assert launched, "no launches found"
    assert launched <= defined, launched - defined
    assert defined <= launched, f"kernels no engine launches (dead code): {sorted(defined - launched)}"


def test_row_of_index_trick_is_exact():
    """kernels/common.cuh finds the row of pixel p as floor((p + 0.5) * (1 / n)) in float32 plus two integer fixes."""
    for n in (7, 32, 64, 100, 128, 256, 512, 1000, 1024, 2048, 4096):
        p = np.arange(n * n, dtype=np.int64)
        inv = np.float32(1.0) / np.float32(n)
        inv = inv * np.float32(1 + 4e-7)  # fast-math reciprocal: a couple of ulp off
        y = np.floor((p.astype(np.float32) + np.float32(0.5)) * inv).astype(np.int64)
        y -= (y * n > p)
        y += ((y + 1) * n <= p)
        assert np.array_equal(y, p // n), n
