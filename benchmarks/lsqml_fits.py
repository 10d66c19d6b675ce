"""Issue 17, item 1: a fast engine with its per-position options beside the same plain fast engine, in one process
on one GPU, on the benchmark scan of ``benchmarks/engines.py`` (default 900 x 256^2).

    python3 benchmarks/lsqml_fits.py --size 256 --iterations 30 --json out.json
    python3 benchmarks/lsqml_fits.py --algorithm ePIE      # or DM: sub-pixel windows, position refinement
    python3 benchmarks/lsqml_fits.py --algorithm ePIE --configs flux,poisson,flux+poisson   # the flux fit, Poisson
    python3 benchmarks/lsqml_fits.py --variants --configs subpixel+positions+flux --profile   # both schedules

Each configuration runs ``--iterations`` epochs (probe updates from epoch 2, refinement from epoch 2) and reports
the median ms per epoch after the first three (graph capture), in the order plain, each option, plain again (the
two plain runs bound the drift). ``--profile`` then runs the configuration with every option for two eager epochs
(no graph) with a CUDA event after each stage of each mini-batch (``LSQMLFitsMixin.stage_marks``) and prints the
time per stage summed over the epoch (eager launches add their gaps, so the sum exceeds the graph's epoch).

``--variants`` (LSQML): every option runs twice, in the sub-pixel path's first and fused schedules
(``PTYCHOPY_BENCH_LSQML_FITS_FUSED`` 0 and 1, gpu/lsqml_fits.py), one after the other in one process; the table
then gives both, the fused one's gain, and the largest object difference between them (float32 rounding amplified
by LSQML's mini-batches; a race would leave O(1)). ``--profile`` profiles each schedule.

ePIE and DM: the options are routed to the fast engine whether or not the run plan's table lists them yet
(``gpu/window_fits.py``'s and ``gpu/flux_noise.py``'s options, as tests/gpu do); the engine column says which ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engines import load_scan, make_scan, median_ms, nrmse  # noqa: E402  (benchmarks/engines.py)

CONFIGS_BY_ALGORITHM = {"ePIE": {
    "plain": {},
    "subpixel": dict(subpixel_windows=True),  # gpu/window_fits.py
    "positions": dict(position_refinement_from=2),
    "flux": dict(variable_intensity=True),  # gpu/flux_noise.py
    "poisson": dict(noise_model="poisson"),
    "flux+poisson": dict(variable_intensity=True, noise_model="poisson"),
}}
CONFIGS_BY_ALGORITHM["DM"] = CONFIGS_BY_ALGORITHM["ePIE"]
CONFIGS = {
    "plain": {},
    "subpixel": dict(subpixel_windows=True),
    "positions": dict(position_refinement_from=2),
    "flux": dict(variable_intensity=True),
    "subpixel+positions+flux": dict(subpixel_windows=True, position_refinement_from=2, variable_intensity=True),
    "poisson": dict(noise_model="poisson"),
    "all+poisson": dict(subpixel_windows=True, position_refinement_from=2, variable_intensity=True,
                        noise_model="poisson"),
}


SCHEDULES = {"first": "0", "fused": "1"}  # --variants: PTYCHOPY_BENCH_LSQML_FITS_FUSED of each


def run(d, options, iterations, graphs=True, marks=None, algorithm="LSQML", schedule=None):
    from reconstruction import run_plan
    from reconstruction.driver import Reconstruction
    from reconstruction.engines import EngineSettings
    from reconstruction.gpu.flux_noise import FLUX_NOISE_OPTIONS
    from reconstruction.gpu.window_fits import WINDOW_OPTIONS

    if algorithm in ("ePIE", "DM"):  # the fast engine whether or not the run plan's table lists the option yet
        run_plan.FAST_PATH_SUPPORTS[algorithm] |= FLUX_NOISE_OPTIONS | WINDOW_OPTIONS
    os.environ["PTYCHOPY_BENCH_GPU_GRAPHS"] = "1" if graphs else "0"
    if schedule is not None:
        os.environ["PTYCHOPY_BENCH_LSQML_FITS_FUSED"] = SCHEDULES[schedule]
    n = d["intensities"].shape[-1]
    settings = EngineSettings(update_probe_from=2, phase_constraint=0, **options)
    rec = Reconstruction(d["intensities"], d["positions"], algorithm=algorithm, iterations=iterations, device="gpu",
                         seed=0, probe=d["probe0"], beam_diameter_px=0.4 * n, settings=settings)
    if marks is not None:
        rec.engine.stage_marks = marks
    for _ in rec:
        pass
    steady = rec.iteration_s[3:] or rec.iteration_s
    out = {"ms": median_ms(rec.iteration_s, 3), "mean_ms": 1e3 * sum(steady) / len(steady),
           "max_ms": 1e3 * max(steady), "nrmse": nrmse(d, rec.object()), "error": rec.errors[-1],
           "engine": type(rec.engine).__name__,
           "fits": bool(getattr(rec.engine, "_fits", False) or getattr(rec.engine, "_shift", False)),
           "plan": rec.plan.implementation_reason, "fused": bool(getattr(rec.engine, "_fused", False)),
           "object": rec.object() if schedule is not None else None}
    rec.close()
    return out


def profile(d, iterations=2, config="all+poisson", schedule=None):
    import cupy as cp  # type: ignore[import-not-found]

    marks: list = []
    run(d, CONFIGS[config], iterations, graphs=False, marks=marks, schedule=schedule)
    cp.cuda.Device().synchronize()
    per_stage: dict[str, float] = defaultdict(float)
    epochs = sum(1 for name, _ in marks if name == "epoch start")
    for (_, a), (name, b) in zip(marks[:-1], marks[1:], strict=True):
        if name != "epoch start":
            per_stage[name] += cp.cuda.get_elapsed_time(a, b) / max(epochs, 1)
    return dict(per_stage)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--scan", type=int, default=30)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--algorithm", default="LSQML", choices=("LSQML", "ePIE", "DM"))
    p.add_argument("--configs", default="", help="comma-separated names (default: every one of the algorithm)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--variants", action="store_true",
                   help="LSQML: each option in both schedules of the sub-pixel path (first, fused, fused, first)")
    p.add_argument("--cache", default="/tmp/ptychopy_bench")
    p.add_argument("--json", default="")
    args = p.parse_args()
    import cupy as cp  # type: ignore[import-not-found]

    d = load_scan(make_scan(Path(args.cache), args.size, args.scan))
    device = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
    configs = CONFIGS_BY_ALGORITHM.get(args.algorithm, CONFIGS)
    names = [c for c in (args.configs or ",".join(configs)).split(",") if c]
    variants = args.variants and args.algorithm == "LSQML"
    runs = [(name, schedule) for name in names if name != "plain"
            for schedule in (("first", "fused", "fused", "first") if variants else (None,))]
    results = []
    for name, schedule in [("plain", None), *runs, ("plain", None)]:
        r = run(d, configs[name], args.iterations, algorithm=args.algorithm, schedule=schedule)
        r["config"], r["schedule"] = name, schedule or ""
        results.append(r)
        print(f"FITS {args.algorithm} {name:26s} {schedule or '':6s} {r['ms']:8.2f} ms/it  NRMSE {r['nrmse']:.4f}  "
              f"{r['engine']} fits={r['fits']} fused={r['fused']}", flush=True)
    plain = min(r["ms"] for r in results if r["config"] == "plain")
    print(f"\n| {args.algorithm}, {args.scan * args.scan} x {args.size}^2 on {device} | schedule | ms/iteration "
          "(median) | x plain | mean ms (x plain) | slowest ms | NRMSE |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['schedule']} | {r['ms']:.2f} | {r['ms'] / plain:.2f} | {r['mean_ms']:.2f} "
              f"({r['mean_ms'] / plain:.2f}) | {r['max_ms']:.2f} | {r['nrmse']:.4f} |")
    if variants:
        print("\n| option | first ms (x plain) | fused ms (x plain) | fused gain ms | object fused-vs-first |")
        print("|---|---|---|---|---|")
        for name in dict.fromkeys(n for n, _ in runs):
            by = {sch: [r for r in results if r["config"] == name and r["schedule"] == sch] for sch in SCHEDULES}
            ms = {sch: sum(r["ms"] for r in rs) / len(rs) for sch, rs in by.items()}
            a, b = by["fused"][0]["object"], by["first"][0]["object"]
            diff = float(np.linalg.norm(a - b) / np.linalg.norm(b))
            print(f"| {name} | {ms['first']:.2f} ({ms['first'] / plain:.2f}) | {ms['fused']:.2f} "
                  f"({ms['fused'] / plain:.2f}) | {ms['first'] - ms['fused']:.2f} | {diff:.1e} |")
    for r in results:
        r.pop("object")
    prof: dict = {}
    if args.profile and args.algorithm == "LSQML":
        target = (names[0] if names[0] != "plain" else "all+poisson") if variants else "all+poisson"
        for schedule in (SCHEDULES if variants else (None,)):
            prof[schedule or "default"] = stages = profile(d, config=target, schedule=schedule)
            print(f"\n| stage ({target}, {schedule or 'default'} schedule, eager, per epoch) | ms |")
            print("|---|---|")
            for k, v in stages.items():
                print(f"| {k} | {v:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "algorithm": args.algorithm, "results": results,
                                               "profile": prof}, indent=1))


if __name__ == "__main__":
    main()
