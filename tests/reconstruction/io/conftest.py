"""Fixtures for the io tests: real HDF5 files in tmp_path and parameter objects pointing at them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reconstruction.parameters import Parameters
from reconstruction.state import Result


def make_params(**values: Any) -> Parameters:
    """Parameters with ``{"group.name": value}`` given as ``group__name=value`` keywords."""
    return Parameters().replace({k.replace("__", "."): v for k, v in values.items()})


@pytest.fixture
def raw_frames() -> np.ndarray:
    """(12, 40, 48) uint32-valued float frames, distinct per frame and pixel (frame k has k*10000 + index)."""
    k, r, c = np.meshgrid(np.arange(12), np.arange(40), np.arange(48), indexing="ij")
    return (k * 10000 + r * 100 + c).astype(np.float64)


@pytest.fixture
def scan_params(tmp_path: Path) -> Any:
    """A function building Parameters for files under ``tmp_path`` (pattern relative to it)."""

    def build(pattern: str, **values: Any) -> Parameters:
        base = {"data__file_pattern": str(tmp_path / pattern), "experiment__scan_dims": (3, 4),
                "preprocessing__size_px": 16, "preprocessing__crop_center_px": (20, 24),
                "preprocessing__sqrt_data": True}
        base.update(values)
        return make_params(**base)

    return build


def _make_result(params: Parameters | None = None) -> Result:
    rng = np.random.default_rng(3)
    obj = (rng.normal(size=(40, 50)) + 1j * rng.normal(size=(40, 50))).astype(np.complex64)
    probe = (rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16))).astype(np.complex64)
    params = params or Parameters().replace({"experiment.job_id": "run7", "experiment.scan_dims": (2, 3),
                                             "reconstruction.iterations": 3, "preprocessing.size_px": 16})
    return Result(object=obj, probe=probe, positions_px=rng.uniform(1, 20, size=(6, 2)),
                  errors=[0.5, 0.25, 0.125], rms=[], iteration_s=[0.01, 0.02, 0.03], algorithm="ePIE",
                  device="CPU (NumPy)", pixel_size_m=params.pixel_size_m, parameters=params,
                  stopped_early=None, inputs={"files": ["/data/a_000001.h5"], "dataset": "/entry/data/data"})


@pytest.fixture
def make_result() -> Any:
    """A function returning a small :class:`Result` with 2 probe modes, 6 positions and 3 iterations."""
    return _make_result
