"""Fixtures for the io tests: real HDF5 files in tmp_path and parameter objects pointing at them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reconstruction.parameters import Parameters


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
