"""Issue 17, item 1: a fast engine with its per-position options beside the same plain fast engine, in one process
on one GPU, on the benchmark scan of ``benchmarks/engines.py`` (default 900 x 256^2).

    python3 benchmarks/lsqml_fits.py --size 256 --iterations 30 --json out.json
    python3 benchmarks/lsqml_fits.py --algorithm ePIE      # or DM: sub-pixel windows, position refinement

Each configuration runs ``--iterations`` epochs (probe updates from epoch 2, refinement from epoch 2) and reports
the median ms per epoch after the first three (graph capture), in the order plain, each option, plain again (the
two plain runs bound the drift). ``--profile`` then runs the configuration with every option for two eager epochs
(no graph) with a CUDA event after each stage of each mini-batch (``LSQMLFitsMixin.stage_marks``) and prints the
time per stage summed over the epoch (eager launches add their gaps, so the sum exceeds the graph's epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engines import load_scan, make_scan, median_ms, nrmse  # noqa: E402  (benchmarks/engines.py)

CONFIGS_BY_ALGORITHM = {"ePIE": {  # gpu/window_fits.py
    "plain": {},
    "subpixel": dict(subpixel_windows=True),
    "positions": dict(position_refinement_from=2),
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


def run(d, options, iterations, graphs=True, marks=None, algorithm="LSQML"):
    from reconstruction.driver import Reconstruction
    from reconstruction.engines import EngineSettings

    os.environ["PTYCHOPY_BENCH_GPU_GRAPHS"] = "1" if graphs else "0"
    n = d["intensities"].shape[-1]
    settings = EngineSettings(update_probe_from=2, phase_constraint=0, **options)
    rec = Reconstruction(d["intensities"], d["positions"], algorithm=algorithm, iterations=iterations, device="gpu",
                         seed=0, probe=d["probe0"], beam_diameter_px=0.4 * n, settings=settings)
    if marks is not None:
        rec.engine.stage_marks = marks
    for _ in rec:
        pass
    out = {"ms": median_ms(rec.iteration_s, 3), "nrmse": nrmse(d, rec.object()), "error": rec.errors[-1],
           "engine": type(rec.engine).__name__,
           "fits": bool(getattr(rec.engine, "_fits", False) or getattr(rec.engine, "_shift", False)),
           "plan": rec.plan.implementation_reason}
    rec.close()
    return out


def profile(d, iterations=2):
    import cupy as cp  # type: ignore[import-not-found]

    marks: list = []
    run(d, CONFIGS["all+poisson"], iterations, graphs=False, marks=marks)
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
    p.add_argument("--cache", default="/tmp/ptychopy_bench")
    p.add_argument("--json", default="")
    args = p.parse_args()
    import cupy as cp  # type: ignore[import-not-found]

    d = load_scan(make_scan(Path(args.cache), args.size, args.scan))
    device = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
    configs = CONFIGS_BY_ALGORITHM.get(args.algorithm, CONFIGS)
    names = [c for c in (args.configs or ",".join(configs)).split(",") if c]
    order = ["plain", *[c for c in names if c != "plain"], "plain"]
    results = []
    for name in order:
        r = run(d, configs[name], args.iterations, algorithm=args.algorithm)
        r["config"] = name
        results.append(r)
        print(f"FITS {args.algorithm} {name:26s} {r['ms']:8.2f} ms/it  NRMSE {r['nrmse']:.4f}  {r['engine']} "
              f"fits={r['fits']}", flush=True)
    plain = min(r["ms"] for r in results if r["config"] == "plain")
    print(f"\n| {args.algorithm}, {args.scan * args.scan} x {args.size}^2 on {device} | ms/iteration | x plain "
          "| NRMSE |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['ms']:.2f} | {r['ms'] / plain:.2f} | {r['nrmse']:.4f} |")
    prof = profile(d) if args.profile and args.algorithm == "LSQML" else {}
    if prof:
        print("\n| stage (all+poisson, eager, per epoch) | ms |")
        print("|---|---|")
        for k, v in prof.items():
            print(f"| {k} | {v:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "algorithm": args.algorithm, "results": results,
                                               "profile": prof}, indent=1))


if __name__ == "__main__":
    main()
