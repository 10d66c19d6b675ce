"""What a click on a finished simulated job's scan costs the server (/jobs/<id>/diffraction/?position=k).

    python -m benchmarks.diffraction_click [--size 256] [--scan 32] [--photons 1e6] [--clicks 5] [--no-cache]

Writes a result file of the simulated truth (as a finished job's), then times what the view does per click
(``webapp/jobs/diffraction.py``: read the result file, the measured pattern through ``load_pattern`` with the
job folder as its cache, the model and the 8-bit images through ``result_diffraction``) for ``clicks`` positions:
the first click, and the next ones. ``--no-cache`` times the old way (no cache folder: every click simulates
again). Checks every click's pattern against the full simulation's. Figures: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from reconstruction import Parameters, Result
from reconstruction.diffraction_preview import result_diffraction
from reconstruction.io import read_result, write_result
from reconstruction.loading import load_pattern
from reconstruction.simulate import simulate_from_parameters


def click_times(size: int, scan: int, photons: float, clicks: int, cache: bool) -> dict[str, object]:
    """Seconds per click (the first, then the rest) on a ``scan`` x ``scan`` raster of ``size`` px patterns."""
    params = Parameters.from_cmdstr(
        f"./ptycho -simulate=1 -size={size} -scanDims={scan},{scan} -i=1 -photons={photons:g} -device=cpu"
    )
    step = params.pixel_size_m * size * 0.15
    params = params.replace({"experiment.step_m": (step, step)})
    sim = simulate_from_parameters(params)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result = Result(object=sim.object_truth, probe=sim.probe_truth,
                        positions_px=np.floor(sim.data.positions_px + 0.5), errors=[0.1], rms=[], iteration_s=[0.1],
                        algorithm="ePIE", device="cpu", pixel_size_m=params.pixel_size_m, parameters=params)
        path = write_result(result, folder / "result.h5")
        rng = np.random.default_rng(0)
        times = []
        for k in rng.choice(scan * scan, clicks, replace=False).tolist():
            t0 = time.perf_counter()
            res = read_result(path)
            measured = load_pattern(res.parameters, k, cache_dir=folder if cache else None)
            result_diffraction(res.object, res.probe, res.positions_px, measured, k, res.intensity_scale)
            times.append(time.perf_counter() - t0)
            assert np.array_equal(measured, sim.data.intensities[k]), k
        kept = {p.name: p.stat().st_size for p in folder.iterdir() if p.name.startswith("sim_")}
    return {"size": size, "positions": scan * scan, "photons": photons, "cache": cache,
            "first_click_s": round(times[0], 4), "next_clicks_s": [round(t, 4) for t in times[1:]],
            "cache_files_bytes": kept, "load_average_1min": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--scan", type=int, default=32)
    p.add_argument("--photons", type=float, default=1e6)
    p.add_argument("--clicks", type=int, default=5)
    p.add_argument("--no-cache", action="store_true")
    a = p.parse_args(argv)
    print(json.dumps(click_times(a.size, a.scan, a.photons, a.clicks, not a.no_cache)))


if __name__ == "__main__":
    main()
