"""The package's public face: what ``reconstruction/__init__.py`` exports, and that importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import reconstruction


def test_the_readme_names_import_from_the_package_and_run():
    from reconstruction import Progress, Reconstruction, Result, reconstruct, simulate

    scan = simulate(size_px=16, scan_dims=(3, 3), photons=1e4, seed=0)
    result = reconstruct(scan.data.intensities, scan.data.positions_px, algorithm="LSQML", iterations=2,
                         device="cpu")
    assert isinstance(result, Result) and result.iterations == 2 and np.isfinite(result.errors).all()
    rec = Reconstruction(scan.data.intensities, scan.data.positions_px, algorithm="DM", iterations=1, device="cpu")
    assert [type(p) for p in rec] == [Progress]


def test_every_public_name_is_exported_and_the_errors_share_one_base():
    expected = {"Parameters", "Reconstruction", "reconstruct", "simulate", "Progress", "Result", "RunPlan",
                "plan_run", "ParameterError", "InputDataError", "DeviceMemoryError", "DeviceUnavailableError",
                "SessionStateError", "ReconstructionError"}
    assert set(reconstruction.__all__) == expected
    for name in expected:
        assert getattr(reconstruction, name) is not None, name
    for name in ("InputDataError", "DeviceMemoryError", "DeviceUnavailableError", "SessionStateError"):
        assert issubclass(getattr(reconstruction, name), reconstruction.ReconstructionError)


def test_importing_the_package_imports_neither_cupy_nor_web_code():
    code = ("import sys, reconstruction; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cupy', 'cupyx', 'django', 'h5py')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
