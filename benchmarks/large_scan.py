"""A scan larger than the benchmark's: by default 100,000 positions x 256^2 (26 GB of float32 intensities) on one
GPU with ePIE and LSQML: setup time, ms per epoch, peak device memory against intensities + object + probe.

    python3 benchmarks/large_scan.py --positions 100000 --size 256 --algs ePIE,LSQML --epochs 2
    python3 benchmarks/large_scan.py --positions 16384 --size 128 --algs ePIE --modes 12   # issue 17's capture case

The data are simulated on the GPU (a smooth phase object, the defocused probe, Poisson noise at 1e6 photons)
and handed to :class:`reconstruction.Reconstruction` as one host array, as a loader would.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def simulate_on_gpu(n_pos: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    import cupy as cp  # type: ignore[import-not-found]

    from reconstruction.positions import object_shape_for
    from reconstruction.probes import defocused_pupil_probe
    from reconstruction.simulate import raster_px

    rows = 100 if n_pos % 100 == 0 else math.isqrt(n_pos)
    while n_pos % rows:
        rows -= 1
    positions = raster_px((rows, n_pos // rows), n / 10.0)
    h, w = object_shape_for(positions, n)
    y, x = cp.mgrid[0:h, 0:w].astype(cp.float32)
    phase = (0.6 * cp.sin(2 * np.pi * x / 97.0) * cp.cos(2 * np.pi * y / 131.0)
             + 0.3 * cp.sin(2 * np.pi * (x + y) / 53.0))
    obj = ((0.85 + 0.1 * cp.cos(2 * np.pi * x / 71.0)) * cp.exp(1j * phase)).astype(cp.complex64)
    del y, x, phase
    probe = cp.asarray(defocused_pupil_probe(n, 0.4 * n) * np.float32(1e3))
    corners = np.floor(positions + 0.5).astype(np.int64)
    out = np.empty((n_pos, n, n), dtype=np.float32)
    ar = cp.arange(n)
    rs = cp.random.RandomState(seed)
    chunk = 1024
    for s in range(0, n_pos, chunk):
        c = cp.asarray(corners[s:s + chunk])
        idx = (c[:, 0, None, None] + ar[None, :, None]) * w + (c[:, 1, None, None] + ar[None, None, :])
        far = cp.fft.fft2(obj.ravel()[idx] * probe[None], norm="ortho")
        inten = (far.real**2 + far.imag**2).astype(cp.float32)
        out[s:s + chunk] = rs.poisson(inten).astype(cp.float32).get()
    return out, positions


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--positions", type=int, default=100_000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--algs", default="ePIE,LSQML")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--modes", type=int, default=1, help="probe modes, all active from the first epoch")
    args = p.parse_args()

    import cupy as cp  # type: ignore[import-not-found]

    from reconstruction.driver import Reconstruction
    from reconstruction.engines import EngineSettings

    t0 = time.perf_counter()
    inten, positions = simulate_on_gpu(args.positions, args.size)
    print(f"LARGE simulated {inten.shape} ({inten.nbytes / 1e9:.1f} GB) in {time.perf_counter() - t0:.1f} s",
          flush=True)
    pool = cp.get_default_memory_pool()
    for alg in args.algs.split(","):
        pool.free_all_blocks()
        t0 = time.perf_counter()
        rec = Reconstruction(inten, positions, algorithm=alg, iterations=args.epochs, device="gpu", seed=0,
                             beam_diameter_px=0.4 * args.size, probe_modes=args.modes,
                             settings=EngineSettings(update_probe_from=1, update_modes_from=1, phase_constraint=0))
        setup = time.perf_counter() - t0
        for _ in rec:
            pass
        peak = pool.total_bytes()
        base = inten.nbytes + rec.state.obj.nbytes + rec.state.probe.nbytes
        free, total = cp.cuda.runtime.memGetInfo()
        ms = [1e3 * t for t in rec.iteration_s]
        print(f"LARGE {alg}: N={args.positions} n={args.size} modes={args.modes} object {rec.state.obj.shape}: "
              f"setup {setup:.1f} s "
              f"(host checks, upload, engine), epochs {', '.join(f'{v:.0f}' for v in ms)} ms "
              f"(the first includes graph capture), median {statistics.median(ms):.0f} ms; errors "
              f"{', '.join(f'{e:.4f}' for e in rec.errors)}; peak pool {peak / 2**30:.2f} GiB = "
              f"{peak / base:.2f} x (I+O+P) {base / 2**30:.2f} GiB; device free {free / 2**30:.1f} of "
              f"{total / 2**30:.1f} GiB; estimate said {rec.needed_bytes / 2**30:.1f} GiB", flush=True)
        rec.close()


if __name__ == "__main__":
    main()
