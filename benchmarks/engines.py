"""The engine benchmark of issue 10: ptychopy's ePIE, DM and LSQML beside tike and pty-chi, and the FFT floor.

One run simulates a square raster (default 30x30 = 900 positions, step n/10, Poisson noise at 1e6 photons per
pattern, a defocused probe) for each pattern size and measures, per implementation and algorithm:
milliseconds per iteration (median after warm-up, synchronised host clock around each iteration), peak device
memory, and the object's NRMSE against the truth at equal iterations (inside the region lit above 30 % of the
maximum of the true probe's summed intensity, after removing scale, phase ramp and integer shift).

    python3 benchmarks/engines.py --device gpu --sizes 128,256,512 --out results/   # on the GPU machine
    python3 benchmarks/engines.py --device cpu --sizes 64 --scan 12 --peers ptychi  # NumPy path beside pty-chi

Each implementation runs in its own process (clean memory pools, peak memory per run); the simulated data is
cached in ``--cache``. ``benchmarks/run_on_device.sh`` runs everything of issue 10 in one device call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALGORITHMS = ("DM", "LSQML", "ePIE")


# ---------------------------------------------------------------------------------------------- data
def scan_file(cache: Path, n: int, scan: int) -> Path:
    return cache / f"sim_{n}_{scan}x{scan}.npz"


def make_scan(cache: Path, n: int, scan: int) -> Path:
    path = scan_file(cache, n, scan)
    if path.exists():
        return path
    from reconstruction.probes import probe_guess_from_data
    from reconstruction.simulate import simulate

    sim = simulate(size_px=n, scan_dims=(scan, scan), step_px=n / 10.0, photons=1e6, seed=0)
    inten = sim.data.intensities
    corners = np.floor(sim.data.positions_px + 0.5).astype(np.int64)
    p2 = np.abs(sim.probe_truth[0]) ** 2
    illum = np.zeros(sim.object_truth.shape, dtype=np.float64)
    for r, c in corners:
        illum[r:r + n, c:c + n] += p2
    probe0 = probe_guess_from_data(inten, 0.4 * n, 1)[0]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, intensities=inten, positions=sim.data.positions_px, truth=sim.object_truth,
             region=illum > 0.3 * illum.max(), probe0=probe0)
    return path


def load_scan(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def nrmse(d: dict[str, np.ndarray], obj: np.ndarray) -> float:
    from reconstruction.metrics import object_nrmse

    h, w = d["truth"].shape
    return float(object_nrmse(d["truth"], np.asarray(obj)[:h, :w].astype(np.complex64), d["region"]))


def base_bytes(d: dict[str, np.ndarray]) -> int:
    """float32 intensities + complex64 object + complex64 probe: the unit of the memory targets."""
    n = d["intensities"].shape[-1]
    return int(d["intensities"].size * 4 + d["truth"].size * 8 + n * n * 8)


def median_ms(times_s: list[float], skip: int) -> float:
    t = times_s[skip:] if len(times_s) > skip else times_s
    return 1e3 * statistics.median(t)


# ---------------------------------------------------------------------------------------------- ours
def run_ours(d: dict[str, np.ndarray], alg: str, iterations: int, device: str, variant: str,
             pps: int = 0, variable_intensity: bool = False) -> dict[str, Any]:
    from reconstruction.driver import Reconstruction
    from reconstruction.engines import EngineSettings

    n = d["intensities"].shape[-1]
    settings = EngineSettings(update_probe_from=2, phase_constraint=0,
                              position_refinement_from=pps if alg == "LSQML" else 0,
                              variable_intensity=variable_intensity and alg == "LSQML")
    pool = None
    if device == "gpu":
        import cupy as cp  # type: ignore[import-not-found]

        pool = cp.get_default_memory_pool()
        pool.free_all_blocks()
        base_pool = pool.total_bytes()
    t0 = time.perf_counter()
    rec = Reconstruction(d["intensities"], d["positions"], algorithm=alg, iterations=iterations, device=device,
                         seed=0, probe=d["probe0"], beam_diameter_px=0.4 * n, settings=settings,
                         implementation="reference" if variant == "xp" else "auto")
    setup_s = time.perf_counter() - t0
    for _ in rec:
        pass
    peak = (pool.total_bytes() - base_pool) if pool is not None else None
    preview = []
    for _ in range(5):
        t1 = time.perf_counter()
        rec.preview(max_px=512)
        preview.append(time.perf_counter() - t1)
    out = {
        "impl": "ptychopy" if variant == "fast" else "ptychopy-xp", "alg": alg, "iterations": iterations,
        "ms": median_ms(rec.iteration_s, 3), "first_ms": 1e3 * rec.iteration_s[0], "setup_s": setup_s,
        "peak_bytes": peak, "nrmse": nrmse(d, rec.object()), "error": rec.errors[-1],
        "engine": type(rec.engine).__name__, "plan": rec.plan.implementation_reason,
        "preview_ms": 1e3 * statistics.median(preview),
        "refine_positions_from": settings.position_refinement_from,
        "variable_intensity": settings.variable_intensity,
    }
    rec.close()
    return out


# ---------------------------------------------------------------------------------------------- tike
def run_tike(d: dict[str, np.ndarray], alg: str, iterations: int) -> dict[str, Any]:
    import cupy as cp  # type: ignore[import-not-found]
    import tike.ptycho as tp  # type: ignore[import-not-found]

    n = d["intensities"].shape[-1]
    h, w = d["truth"].shape
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    options = {"DM": lambda: tp.DmOptions(num_iter=iterations, num_batch=1),
               "LSQML": lambda: tp.LstsqOptions(num_iter=iterations, num_batch=10),
               "ePIE": lambda: tp.RpieOptions(num_iter=iterations, num_batch=10)}[alg]()
    params = tp.PtychoParameters(
        probe=d["probe0"][None, None, None].astype(np.complex64),
        psi=np.ones((1, h + 2, w + 2), dtype=np.complex64),
        scan=np.floor(d["positions"] + 0.5).astype(np.float32),
        algorithm_options=options,
        probe_options=tp.ProbeOptions(),
        object_options=tp.ObjectOptions(),
        exitwave_options=tp.ExitWaveOptions(measured_pixels=np.ones((n, n), dtype=bool), noise_model="gaussian"),
    )
    times, peak = [], 0
    with tp.Reconstruction(d["intensities"].astype(np.float32), params, num_gpu=1) as ctx:
        for _ in range(iterations):
            cp.cuda.Device().synchronize()
            t0 = time.perf_counter()
            ctx.iterate(1)
            cp.cuda.Device().synchronize()
            times.append(time.perf_counter() - t0)
            peak = max(peak, pool.total_bytes())
        result = ctx.get_result()
    psi = np.asarray(result.psi)
    psi = psi.reshape(-1, *psi.shape[-2:])[0]
    name = {"DM": "DM (1 batch)", "LSQML": "lstsq_grad (10 batches)", "ePIE": "rPIE (10 batches)"}[alg]
    return {"impl": "tike", "alg": alg, "variant": name, "iterations": iterations, "ms": median_ms(times, 3),
            "first_ms": 1e3 * times[0], "peak_bytes": peak, "nrmse": nrmse(d, psi[:h, :w])}


# ---------------------------------------------------------------------------------------------- pty-chi
def run_ptychi(d: dict[str, np.ndarray], alg: str, iterations: int, device: str) -> dict[str, Any]:
    import ptychi.api as api  # type: ignore[import-not-found]
    import torch  # type: ignore[import-not-found]
    from ptychi.api.task import PtychographyTask  # type: ignore[import-not-found]

    n = d["intensities"].shape[-1]
    h, w = d["truth"].shape
    gpu = device == "gpu"
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    opts: Any = {"DM": api.DMOptions, "LSQML": api.LSQMLOptions, "ePIE": api.EPIEOptions}[alg]()
    opts.data_options.data = d["intensities"].astype(np.float32)
    opts.data_options.fft_shift = False
    opts.data_options.save_data_on_device = gpu
    opts.object_options.initial_guess = torch.ones((1, h, w), dtype=torch.complex64)
    opts.object_options.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
    opts.object_options.position_origin_coords = np.array([-0.5, -0.5])  # window top-left = our corner
    opts.probe_options.initial_guess = torch.as_tensor(d["probe0"][None, None].astype(np.complex64))
    corners = np.floor(d["positions"] + 0.5)
    opts.probe_position_options.position_y_px = corners[:, 0] + n / 2
    opts.probe_position_options.position_x_px = corners[:, 1] + n / 2
    opts.probe_position_options.optimizable = False
    opts.reconstructor_options.num_epochs = iterations
    opts.reconstructor_options.default_device = api.Devices.GPU if gpu else api.Devices.CPU
    if alg == "DM":
        opts.reconstructor_options.chunk_length = 100
        variant = "DM (chunk 100)"
    elif alg == "LSQML":
        opts.reconstructor_options.batch_size = 100
        variant = "LSQML (batch 100)"
    else:
        opts.reconstructor_options.batch_size = 1
        variant = "ePIE (batch 1, sequential)"
    task = PtychographyTask(opts)
    times = []
    for _ in range(iterations):
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        task.run(1)
        if gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    obj = task.get_data_to_cpu("object", as_numpy=True)
    obj = obj.reshape(-1, *obj.shape[-2:])[0]
    peak = int(torch.cuda.max_memory_allocated()) if gpu else None
    return {"impl": "pty-chi", "alg": alg, "variant": variant, "iterations": iterations,
            "ms": median_ms(times, 1 if iterations < 6 else 3), "first_ms": 1e3 * times[0], "peak_bytes": peak,
            "nrmse": nrmse(d, obj)}


# ---------------------------------------------------------------------------------------------- floor
def fft_floor(d: dict[str, np.ndarray]) -> dict[str, Any]:
    """One batched forward + inverse C2C FFT of all patterns (complex64, in place, cached plan)."""
    import cupy as cp  # type: ignore[import-not-found]
    from cupy.cuda import cufft  # type: ignore[import-not-found]
    from cupyx.scipy import fft as cpx_fft  # type: ignore[import-not-found]

    n_pos, n, _ = d["intensities"].shape
    a = cp.asarray(d["intensities"]).astype(cp.complex64)
    plan = cpx_fft.get_fft_plan(a, axes=(-2, -1), value_type="C2C")
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for i in range(25):
        start.record()
        plan.fft(a, a, cufft.CUFFT_FORWARD)
        plan.fft(a, a, cufft.CUFFT_INVERSE)
        stop.record()
        stop.synchronize()
        if i >= 5:
            times.append(cp.cuda.get_elapsed_time(start, stop))
        a *= np.float32(1.0 / (n * n))
    return {"impl": "floor", "alg": "fft fwd+inv", "ms": statistics.median(times), "iterations": 20}


# ---------------------------------------------------------------------------------------------- worker / main
def worker(args: argparse.Namespace) -> None:
    d = load_scan(Path(args.data))
    algs = args.algs.split(",")
    for alg in algs:
        try:
            if args.impl in ("ptychopy", "ptychopy-xp"):
                iters = args.iterations if args.impl == "ptychopy" else args.xp_iterations
                rec = run_ours(d, alg, iters, args.device, "fast" if args.impl == "ptychopy" else "xp", args.pps,
                               args.variable_intensity)
                if args.impl == "ptychopy" and alg == "ePIE" and args.peer_epie_epochs:
                    short = run_ours(d, alg, args.peer_epie_epochs, args.device, "fast")
                    rec["nrmse_at_peer_epochs"] = short["nrmse"]
            elif args.impl == "tike":
                rec = run_tike(d, alg, args.iterations)
            elif args.impl == "pty-chi":
                rec = run_ptychi(d, alg, args.peer_epie_epochs if alg == "ePIE" else args.iterations, args.device)
            elif args.impl == "floor":
                rec = fft_floor(d)
            else:
                raise ValueError(args.impl)
        except Exception as exc:  # a peer that fails is recorded, not fatal
            rec = {"impl": args.impl, "alg": alg, "failed": f"{type(exc).__name__}: {exc}"[:400]}
        rec.update({"n": int(d["intensities"].shape[-1]), "positions": int(d["intensities"].shape[0]),
                    "device": args.device, "base_bytes": base_bytes(d)})
        if rec.get("peak_bytes"):
            rec["mem_ratio"] = rec["peak_bytes"] / rec["base_bytes"]
        print("RESULT " + json.dumps(rec), flush=True)
        if args.impl == "floor":
            break


def orchestrate(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache)
    results: list[dict[str, Any]] = []
    impls = [] if args.no_ours else ["ptychopy"] + (["floor"] if args.device == "gpu" else [])
    impls += ["ptychopy-xp"] if args.xp_iterations and not args.no_ours else []
    impls += [p for p in args.peers.split(",") if p]
    tag = args.tag or args.device
    with open(out / f"bench_{tag}.log", "a") as log:
        _orchestrate(args, impls, out, tag, cache, results, log)


def _orchestrate(args: argparse.Namespace, impls: list[str], out: Path, tag: str, cache: Path,
                 results: list[dict[str, Any]], log: Any) -> None:
    for n in [int(s) for s in args.sizes.split(",")]:
        t0 = time.perf_counter()
        data = make_scan(cache, n, args.scan)
        print(f"# n={n}: data ready in {time.perf_counter() - t0:.1f} s", flush=True)
        for impl in impls:
            impl = "pty-chi" if impl == "ptychi" else impl
            algs = args.algs
            if impl == "pty-chi" and n > args.ptychi_epie_max_n:
                algs = ",".join(a for a in algs.split(",") if a != "ePIE")
            cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--data", str(data), "--device", args.device,
                   "--algs", algs, "--iterations", str(args.iterations), "--xp-iterations", str(args.xp_iterations),
                   "--peer-epie-epochs", str(args.peer_epie_epochs), "--pps", str(args.pps)]
            cmd += ["--variable-intensity"] if args.variable_intensity else []
            t1 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            log.write(f"## {impl} n={n}\n{proc.stdout}\n{proc.stderr[-4000:]}\n")
            log.flush()
            got = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if not got:
                got = [{"impl": impl, "n": n, "alg": "*", "failed": f"exit {proc.returncode}: {proc.stderr[-300:]}"}]
            for r in got:
                r["wall_s"] = time.perf_counter() - t1
                print(summary_line(r), flush=True)
            results.extend(got)
            with open(out / f"bench_{tag}.json", "w") as f:
                json.dump(results, f, indent=1)
    print(table(results))
    log.write(table(results) + "\n")


def summary_line(r: dict[str, Any]) -> str:
    if "failed" in r:
        return f"{r['impl']:12s} n={r.get('n')} {r['alg']:6s} FAILED {r['failed'][:300]}"
    mem = f"{r['peak_bytes'] / 2**20:8.0f} MiB ({r.get('mem_ratio', 0):.2f}x)" if r.get("peak_bytes") else ""
    nr = f"nrmse {r['nrmse']:.4f}" if "nrmse" in r else ""
    return f"{r['impl']:12s} n={r['n']} {r['alg']:6s} {r['ms']:9.2f} ms/it {mem} {nr} it={r.get('iterations')}"


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| n | algorithm | implementation | ms/iteration | x floor | peak MiB | x (I+O+P) | NRMSE | iterations |",
            "|---|---|---|---|---|---|---|---|---|"]
    floors = {r["n"]: r["ms"] for r in results if r.get("impl") == "floor" and "ms" in r}
    for r in sorted(results, key=lambda r: (r.get("n", 0), str(r.get("alg")), str(r.get("impl")))):
        if r.get("impl") == "floor":
            rows.append(f"| {r['n']} | FFT floor | cuFFT fwd+inv, all patterns | {r['ms']:.2f} | 1 | | | | |")
            continue
        if "failed" in r:
            rows.append(f"| {r.get('n')} | {r['alg']} | {r['impl']} | failed: {r['failed'][:120]} | | | | | |")
            continue
        fl = floors.get(r["n"])
        ratio = f"{r['ms'] / fl:.1f}" if fl else ""
        mem = f"{r['peak_bytes'] / 2**20:.0f}" if r.get("peak_bytes") else ""
        mr = f"{r['mem_ratio']:.2f}" if r.get("mem_ratio") else ""
        name = r["impl"] + (f" {r['variant']}" if r.get("variant") else "")
        nr = f"{r['nrmse']:.4f}"
        if r.get("nrmse_at_peer_epochs") is not None:
            nr += f" ({r['nrmse_at_peer_epochs']:.4f} at peer epochs)"
        rows.append(f"| {r['n']} | {r['alg']} | {name} | {r['ms']:.2f} | {ratio} | {mem} | {mr} | {nr} | "
                    f"{r['iterations']} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--sizes", default="128,256,512")
    p.add_argument("--scan", type=int, default=30, help="scan is scan x scan positions")
    p.add_argument("--algs", default=",".join(ALGORITHMS))
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--xp-iterations", type=int, default=0, help="also time the reference xp engines (0 = no)")
    p.add_argument("--peer-epie-epochs", type=int, default=2, help="pty-chi's sequential ePIE is slow: epochs")
    p.add_argument("--ptychi-epie-max-n", type=int, default=256)
    p.add_argument("--peers", default="tike,ptychi")
    p.add_argument("--no-ours", action="store_true", help="run the peers only")
    p.add_argument("--pps", type=int, default=0,
                   help="our LSQML refines positions from this iteration (-refinePositions -PPS=N; 0 = off; the "
                        "reference engine)")
    p.add_argument("--variable-intensity", action="store_true",
                   help="our LSQML fits each position's intensity (-variableIntensity; the reference engine)")
    p.add_argument("--out", default="benchmarks/out")
    p.add_argument("--cache", default="/tmp/ptychopy_bench")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--tag", default="", help="names the output files bench_<tag>.json/.log (default: device)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
