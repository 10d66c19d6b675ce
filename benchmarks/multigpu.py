"""The multi-GPU benchmark of issue 8: one scan split over 1, 2 and 4 GPUs, and many small jobs one per GPU.

Part 1 (split): a 60x60 raster (3,600 positions) of 256^2 patterns (step n/10, Poisson noise at 1e6 photons,
defocused probe). For each algorithm and each G in --split (default 1,2,4, capped at the GPUs listed) it
measures milliseconds per iteration (median after --warmup iterations; each iteration ends with every
region synchronised), the scaling efficiency t_1 / (G t_G) against the same split engine in one region
(and against the plain one-GPU run with its fast path; split DM runs the summed reference DM), and the
object's NRMSE against the one-GPU object and against the truth after the same iterations.

Part 2 (many jobs): --jobs small scans (default 16 jobs of 128^2 patterns, 20x20 raster) run one worker
process per GPU (CUDA_VISIBLE_DEVICES=g, jobs dealt round robin) and, for comparison, all on GPU 0 in one
worker; it reports the wall time, jobs per second and the efficiency (one-GPU wall / (G x G-GPU wall)).

    python3 benchmarks/multigpu.py --gpus 0,1,2,3 --out benchmarks/results/multigpu.json   # on nvidia-h200-x4
    python3 benchmarks/multigpu.py --device cpu --gpus 0,1 --size 32 --scan 8 --iterations 3 --jobs 2 \
        --job-size 32 --job-scan 6   # smoke test of the script on the CPU (NumPy "devices")

NCCL_NVLS_ENABLE=0 is set for every process (the communicator sets it too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["NCCL_NVLS_ENABLE"] = "0"

ALGORITHMS = ("DM", "LSQML", "ePIE")


def simulated(n: int, scan: int, seed: int = 0) -> Any:
    from reconstruction.simulate import simulate

    return simulate(size_px=n, scan_dims=(scan, scan), step_px=n / 10.0, photons=1e6, seed=seed)


def _region(sim: Any) -> np.ndarray:
    """Pixels lit above 30 % of the maximum summed intensity of the true probe."""
    n = sim.probe_truth.shape[-1]
    p2 = np.abs(sim.probe_truth[0]) ** 2
    illum = np.zeros(sim.object_truth.shape)
    for r, c in np.floor(sim.data.positions_px + 0.5).astype(int):
        illum[r:r + n, c:c + n] += p2
    return illum > 0.3 * illum.max()


def _time_run(rec: Any, iterations: int, warmup: int) -> tuple[float, Any]:
    times = []
    for k in range(iterations):
        t0 = time.perf_counter()
        rec.step()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), rec.object()


def bench_split(args: argparse.Namespace) -> list[dict[str, Any]]:
    from reconstruction.driver import Reconstruction
    from reconstruction.metrics import object_nrmse
    from reconstruction.multigpu import SplitReconstruction

    gpus = [int(g) for g in args.gpus.split(",")]
    sim = simulated(args.size, args.scan)
    region = _region(sim)
    d = sim.data
    rows = []
    for alg in args.algorithms.split(","):
        common = dict(algorithm=alg, iterations=args.iterations, seed=1, beam_diameter_px=0.4 * args.size)
        one = Reconstruction(d.intensities, d.positions_px, device=args.device, **common)
        ms1, obj1 = _time_run(one, args.iterations, args.warmup)
        one.close()
        rows.append(dict(part="one", algorithm=alg, gpus=1, ms_per_iteration=ms1,
                         nrmse_vs_truth=object_nrmse(sim.object_truth, obj1, region)))
        print(f"{alg:6s} one GPU (fast path where it applies) {ms1:9.2f} ms/it", flush=True)
        ms_split1 = None
        for g in [int(x) for x in args.split.split(",")]:
            if g > len(gpus):
                continue
            # G=1 here is the same engine in one region (for DM the summed reference DM), the fair baseline
            split = SplitReconstruction(d.intensities, d.positions_px, devices=gpus[:g], backend=args.device,
                                        overlap_px=args.overlap, share_frequency=args.share_frequency,
                                        implementation="reference" if args.reference_engines else "auto", **common)
            ms, obj = _time_run(split, args.iterations, args.warmup)
            split.close()
            ms_split1 = ms if g == 1 else ms_split1
            row = dict(part="split", algorithm=alg, gpus=g, regions=g, ms_per_iteration=ms,
                       efficiency_vs_fast_one=ms1 / (g * ms),
                       efficiency=(ms_split1 / (g * ms)) if ms_split1 else None,
                       nrmse_vs_one=object_nrmse(obj1, obj, region),
                       nrmse_vs_truth=object_nrmse(sim.object_truth, obj, region), exchange=split.exchange)
            rows.append(row)
            print(f"{alg:6s} G={g} {ms:9.2f} ms/it  efficiency {row['efficiency'] or float('nan'):.2f} "
                  f"(vs the fast one-GPU run {row['efficiency_vs_fast_one']:.2f})  "
                  f"NRMSE vs one {row['nrmse_vs_one']:.4f}", flush=True)
    return rows


def job_worker(args: argparse.Namespace) -> None:
    """Run the jobs numbered in --worker-jobs on this process's (only visible) device; print JSON times."""
    from reconstruction.driver import Reconstruction

    out = []
    for j in [int(x) for x in args.worker_jobs.split(",") if x]:
        sim = simulated(args.job_size, args.job_scan, seed=j)
        t0 = time.perf_counter()
        rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm=args.job_algorithm,
                             iterations=args.job_iterations, device=args.device, seed=j,
                             beam_diameter_px=0.4 * args.job_size)
        rec.run()
        out.append(dict(job=j, seconds=time.perf_counter() - t0))
    print(json.dumps(out))


def _spawn(args: argparse.Namespace, gpu: int, jobs: list[int]) -> subprocess.Popen[str]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu), NCCL_NVLS_ENABLE="0")
    cmd = [sys.executable, __file__, "--worker-jobs", ",".join(map(str, jobs)) or "", "--device", args.device,
           "--job-size", str(args.job_size), "--job-scan", str(args.job_scan),
           "--job-iterations", str(args.job_iterations), "--job-algorithm", args.job_algorithm]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def _run_jobs(args: argparse.Namespace, gpus: list[int]) -> float:
    jobs = list(range(args.jobs))
    t0 = time.perf_counter()
    procs = [_spawn(args, g, jobs[k::len(gpus)]) for k, g in enumerate(gpus)]
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"a job worker failed with exit status {p.returncode}")
        json.loads(stdout.strip().splitlines()[-1])
    return time.perf_counter() - t0


def bench_jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    gpus = [int(g) for g in args.gpus.split(",")]
    rows = []
    wall1 = _run_jobs(args, gpus[:1])
    rows.append(dict(part="jobs", gpus=1, jobs=args.jobs, wall_s=wall1, jobs_per_s=args.jobs / wall1, efficiency=1.0))
    print(f"jobs   G=1 {wall1:8.2f} s", flush=True)
    for g in sorted({2, 4, len(gpus)}):
        if g > len(gpus):
            continue
        wall = _run_jobs(args, gpus[:g])
        rows.append(dict(part="jobs", gpus=g, jobs=args.jobs, wall_s=wall, jobs_per_s=args.jobs / wall,
                         efficiency=wall1 / (g * wall)))
        print(f"jobs   G={g} {wall:8.2f} s  efficiency {wall1 / (g * wall):.2f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", default="0,1,2,3", help="GPU indices to use (NumPy 'devices' with --device cpu)")
    ap.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--scan", type=int, default=60, help="raster side: scan x scan positions")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--split", default="1,2,4", help="numbers of GPUs for the split runs")
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--overlap", type=int, default=64, help="halo in pixels (ePIE, LSQML)")
    ap.add_argument("--share-frequency", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--job-size", type=int, default=128)
    ap.add_argument("--job-scan", type=int, default=20)
    ap.add_argument("--job-iterations", type=int, default=50)
    ap.add_argument("--job-algorithm", default="LSQML")
    ap.add_argument("--reference-engines", action="store_true",
                    help="split ePIE/LSQML on the reference xp engines instead of the GPU fast engines")
    ap.add_argument("--skip-jobs", action="store_true")
    ap.add_argument("--skip-split", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument("--worker-jobs", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.warmup = min(args.warmup, max(args.iterations - 1, 0))
    if args.worker_jobs is not None:
        job_worker(args)
        return
    rows = []
    if not args.skip_split:
        rows += bench_split(args)
    if not args.skip_jobs:
        rows += bench_jobs(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(args).items()}, rows=rows), indent=1))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
