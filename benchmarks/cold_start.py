"""Cold start of a GPU worker (issue 17, item 5): how long after a job starts its first frame appears.

    python3 benchmarks/cold_start.py                       # on a GPU: 900 x 256^2 LSQML, four scenarios
    python3 benchmarks/cold_start.py --device cpu --scan 6,6 --size 32   # dry run of the same flow on NumPy

Each scenario runs in a fresh Python process (what a new worker is), in this order:

1. ``fresh``: an empty ``CUPY_CACHE_DIR`` (a new machine), no warm-up: the job compiles everything;
2. ``fresh+warmup``: another empty cache, the worker's boot warm-up first (``reconstruction.gpu.warmup``);
3. ``warm``: the cache scenario 2 filled (a machine that ran before), no warm-up;
4. ``warm+warmup``: that cache, and the warm-up.

Timed in each process: ``boot_s`` from the parent's spawn to the end of the imports and the warm-up (what a
worker spends before it takes jobs), ``warmup_s`` the warm-up alone, then, after the scan is simulated (not
timed: a worker reads it from disk), ``first_frame_s`` from the job's start to its first frame: the run set up
(``Reconstruction``, plan, upload), the first iteration, and the preview the live view sends, split into
``setup_s``, ``first_iteration_s`` and ``preview_s``. The target: ``first_frame_s`` <= 2 s in ``fresh+warmup``.
Prints one ``COLD`` line per scenario and a table; ``--json FILE`` writes them. The CPU mode runs the same steps
on NumPy (the warm-up as its dry run) to check the script, not to measure a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("fresh", "fresh+warmup", "warm", "warm+warmup")


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One scenario in this (fresh) process; ``args.spawned_at`` is the parent's clock at the spawn."""
    sys.path.insert(0, str(ROOT))
    from reconstruction import Reconstruction, simulate
    from reconstruction.engines import EngineSettings
    from reconstruction.gpu.warmup import warm_up

    imported = time.time()
    warmup_s, warmup_line = 0.0, "no warm-up"
    if args.warmup:
        t = time.perf_counter()
        warmup_line = warm_up((args.size,), device=args.device).summary()
        warmup_s = time.perf_counter() - t
    booted = time.time()
    rows, cols = args.scan
    scan = simulate(size_px=args.size, scan_dims=(rows, cols), photons=1e6, seed=0)
    t0 = time.perf_counter()  # the job starts: its data are in host memory
    rec = Reconstruction(scan.data.intensities, scan.data.positions_px, algorithm=args.algorithm,
                         iterations=args.iterations, device=args.device, seed=0, beam_diameter_px=0.4 * args.size,
                         settings=EngineSettings(update_probe_from=1))
    t1 = time.perf_counter()
    rec.step()
    t2 = time.perf_counter()
    rec.preview(max_px=512)
    t3 = time.perf_counter()
    for _ in rec:  # the rest, for the steady iteration time
        pass
    steady = sorted(rec.iteration_s[1:])[len(rec.iteration_s[1:]) // 2] if len(rec.iteration_s) > 1 else None
    out = dict(
        scenario=args.scenario, device=rec.device, algorithm=args.algorithm, positions=rows * cols, size=args.size,
        plan=rec.plan.implementation, import_s=imported - args.spawned_at, warmup_s=warmup_s,
        boot_s=booted - args.spawned_at, setup_s=t1 - t0, first_iteration_s=t2 - t1, preview_s=t3 - t2,
        first_frame_s=t3 - t0, steady_iteration_ms=None if steady is None else 1e3 * steady,
        cache_dir=os.environ.get("CUPY_CACHE_DIR", ""), warmup=warmup_line,
    )
    rec.close()
    return out


def run_scenario(scenario: str, cache_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, CUPY_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--scenario", scenario,
            "--device", args.device, "--scan", f"{args.scan[0]},{args.scan[1]}", "--size", str(args.size),
            "--algorithm", args.algorithm, "--iterations", str(args.iterations)]
    if scenario.endswith("+warmup"):
        argv.append("--warmup")
    argv += ["--spawned-at", repr(time.time())]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=args.timeout_s)
    if proc.returncode != 0:
        raise SystemExit(f"scenario {scenario} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("COLD ")][-1]
    return json.loads(line[len("COLD "):])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--scan", type=lambda s: tuple(int(v) for v in s.split(",")), default=(30, 30),
                    help="scan rows,cols (default 30,30: 900 positions)")
    ap.add_argument("--size", type=int, default=256, help="pattern size in pixels (default 256)")
    ap.add_argument("--algorithm", default="LSQML", choices=("ePIE", "DM", "LSQML"))
    ap.add_argument("--iterations", type=int, default=5, help="iterations per job (the first gives the frame)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}")
    ap.add_argument("--timeout-s", type=float, default=600.0)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--spawned-at", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("COLD " + json.dumps(child(args)), flush=True)
        return 0
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SCENARIOS))
    if unknown:
        ap.error(f"--scenarios: unknown {unknown}; expected some of {', '.join(SCENARIOS)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="ptychopy-cold-") as tmp:
        caches = {"fresh": Path(tmp) / "cache-fresh", "fresh+warmup": Path(tmp) / "cache-warm",
                  "warm": Path(tmp) / "cache-warm", "warm+warmup": Path(tmp) / "cache-warm"}
        for scenario in SCENARIOS:  # in this order: "warm" reuses the cache "fresh+warmup" filled
            if scenario not in wanted and not (scenario == "fresh+warmup" and {"warm", "warm+warmup"} & set(wanted)):
                continue
            result = run_scenario(scenario, caches[scenario], args)
            print("COLD " + json.dumps(result), flush=True)
            if scenario in wanted:
                results.append(result)
    print(f"\n{'scenario':<14}{'boot s':>8}{'warm-up s':>11}{'first frame s':>15}{'setup s':>9}{'1st it s':>10}"
          f"{'preview s':>11}{'steady ms':>11}")
    for r in results:
        steady = "-" if r["steady_iteration_ms"] is None else f"{r['steady_iteration_ms']:.2f}"
        print(f"{r['scenario']:<14}{r['boot_s']:>8.2f}{r['warmup_s']:>11.2f}{r['first_frame_s']:>15.2f}"
              f"{r['setup_s']:>9.2f}{r['first_iteration_s']:>10.2f}{r['preview_s']:>11.2f}{steady:>11}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
