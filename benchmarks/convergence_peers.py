"""Issue 17's convergence target: on simulated scans of a smooth, a sharp and a binary object, each from two probe
guesses, the object error of ptychopy's engines at 30, 50 and 100 iterations beside tike, pty-chi and PtyPy
(each where it is installed), from the same data, the same guess and an object of ones.

    python3 benchmarks/convergence_peers.py --device gpu --out benchmarks/out                      # the GPU run
    python3 benchmarks/convergence_peers.py --device cpu --size 32 --scan 8 --checkpoints 3,5,10 \\
        --codes ours,ptychi,ptypy                                                                  # a CPU check

The scans: ``--size``^2 patterns, a ``--scan`` x ``--scan`` raster of step size/10 with +-1 px random offsets,
rounded to whole pixels (so every code's windows are exact), beam 0.4 size (ptychopy's defocused pupil probe),
Poisson noise at ``--photons`` a pattern. Objects: ``smooth`` (smoothed noise in amplitude 0.6-1 and phase
+-0.8 rad), ``sharp`` (60 Voronoi cells of random amplitude 0.5-1 and phase +-1 rad), ``binary`` (a 36-spoke
Siemens star: amplitude 1 / 0.7, phase 0 / -0.9 rad). Probe guesses: ``data`` (ptychopy's guess from the
patterns) and ``disk`` (a flat disk of the beam's diameter), scaled to the mean pattern's photons. Every code updates
the probe from iteration ``--probe-from`` (default 1, the first, pty-chi's default; measured at 32^2 from the disk
guess: our LSQML reached NRMSE 0.0135 with 1 and stalled at 0.999 with 2, until a held guess the data reject was
fitted to their mean far field before the first iteration: 0.0254 with 2, 0.0268 with 10; docs/parameters.md).

The error: object NRMSE inside the region the true probe lights above 30 % of its maximum, after the removal of
scale, phase ramp and shift (``reconstruction.metrics.object_nrmse``), the better of a whole-pixel alignment and
a sub-pixel one (``reconstruction.compare.align``): see :func:`object_error`. Each code runs in its own process
over every case and stops at each checkpoint; one ``CONVERGE`` JSON line per (code, algorithm, case,
checkpoint), then a table and, per case and checkpoint, our best error against the best peer's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))  # its helpers, also when imported as benchmarks.<name> (last: no shadowing)

from worker_rows import keep_rows, run_rows, show, worker_or_orchestrator  # noqa: E402  (benchmarks/ is the script's own folder)

OBJECTS = ("smooth", "sharp", "binary")
GUESSES = ("data", "disk")
CODES = {"ours": ("LSQML", "DM", "ePIE"), "tike": ("lstsq_grad", "rpie", "dm"), "ptychi": ("LSQML", "DM"),
         "ptypy": ("DM", "ML")}


# ---------------------------------------------------------------------------------------------- the cases
def make_object(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W) complex64 test object of ``kind`` (see the module docstring)."""
    h, w = shape
    if kind == "smooth":
        k = np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None] ** 2
        low = np.exp(-k * (2 * np.pi * 6.0) ** 2 / 2)
        parts = [np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) * low).real for _ in range(2)]
        a, p = ((x - x.min()) / (x.max() - x.min()) for x in parts)
        return ((0.6 + 0.4 * a) * np.exp(1j * 1.6 * (p - 0.5))).astype(np.complex64)
    if kind == "sharp":
        seeds = rng.uniform(0, 1, (60, 2)) * [h, w]
        y, x = np.mgrid[0:h, 0:w]
        cell = np.argmin((y[..., None] - seeds[:, 0]) ** 2 + (x[..., None] - seeds[:, 1]) ** 2, axis=-1)
        amp, phase = rng.uniform(0.5, 1.0, 60), rng.uniform(-1.0, 1.0, 60)
        return (amp[cell] * np.exp(1j * phase[cell])).astype(np.complex64)
    if kind == "binary":
        y, x = np.mgrid[0:h, 0:w]
        spoke = np.sin(18 * np.arctan2(y - h / 2, x - w / 2)) > 0
        return np.where(spoke, 0.7 * np.exp(-0.9j), 1.0).astype(np.complex64)
    raise ValueError(f"object kind {kind!r}: one of {', '.join(OBJECTS)}")


def make_case(cache: Path, kind: str, guess: str, n: int, scan: int, photons: float) -> Path:
    """Simulate (or reuse) one case -> npz with intensities, positions (whole pixels), truth, region, probe0."""
    from reconstruction.probes import defocused_pupil_probe, disk_probe_guess, probe_guess_from_data
    from reconstruction.simulate import raster_px

    path = cache / f"conv_{kind}_{guess}_{n}_{scan}x{scan}_{photons:g}.npz"
    if path.exists():
        return path
    rng = np.random.default_rng(OBJECTS.index(kind))
    positions = raster_px((scan, scan), n / 10.0, margin_px=2.0) + rng.uniform(-1, 1, (scan * scan, 2))
    positions = np.floor(positions - positions.min(axis=0) + 1.5)
    shape = (int(positions[:, 0].max()) + n + 2, int(positions[:, 1].max()) + n + 2)
    truth = make_object(kind, shape, rng)
    probe = defocused_pupil_probe(n, 0.4 * n) * np.float32(np.sqrt(photons))
    corners = positions.astype(np.int64)
    waves = np.stack([truth[r:r + n, c:c + n] for r, c in corners]) * probe
    far = np.fft.fft2(waves, norm="ortho")
    intensities = rng.poisson(far.real ** 2 + far.imag ** 2).astype(np.float32)
    illum = np.zeros(shape)
    for r, c in corners:
        illum[r:r + n, c:c + n] += np.abs(probe) ** 2
    probe0 = (probe_guess_from_data(intensities, 0.4 * n, 1)[0] if guess == "data"
              else disk_probe_guess(n, 0.4 * n).astype(np.complex64))
    probe0 = probe0 * np.sqrt(intensities.sum(axis=(1, 2)).mean() / (np.abs(probe0) ** 2).sum())
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, intensities=intensities, positions=positions, truth=truth, region=illum > 0.3 * illum.max(),
             probe0=probe0.astype(np.complex64))
    return path


def object_error(d: dict[str, np.ndarray], obj: np.ndarray) -> float:
    """NRMSE of ``obj`` (cropped or padded to the truth's shape) inside the lit region after removing scale, phase
    ramp and shift: the smaller of a whole-pixel alignment and a sub-pixel one (of the whole arrays; the region
    lies inside, away from the shift's wrap-around). A sub-pixel shift of a sharp object rings, so a shift that is
    whole is best undone whole (a sharp object rolled by (2, -1) px: 0.0 against 0.0098 through the sub-pixel
    estimate)."""
    from reconstruction.compare import align
    from reconstruction.metrics import object_nrmse

    h, w = d["truth"].shape
    est = np.ones((h, w), np.complex64)
    part = np.asarray(obj)[:h, :w]
    est[:part.shape[0], :part.shape[1]] = part
    whole = object_nrmse(d["truth"], est, d["region"])
    aligned = align(d["truth"], est).aligned.astype(np.complex64)
    return float(min(whole, object_nrmse(d["truth"], aligned, d["region"])))


# ---------------------------------------------------------------------------------------------- the codes
# Each runner: (data, algorithm, checkpoints, device, the iteration (1-based) from which the probe is updated)
# -> yields (iteration, seconds so far, object) at each checkpoint.
Snapshot = Callable[[dict[str, np.ndarray], str, list[int], str, int], Any]


OURS_OPTIONS: dict[str, Any] = {}  # --ours-options: EngineSettings fields our runs change (e.g. beta_decay=0.003)


def ours_option(name: str, text: str) -> Any:
    """The EngineSettings field ``name`` read from ``text`` as its default's type (int or float)."""
    from reconstruction.engines import EngineSettings

    default = getattr(EngineSettings(), name)
    return int(float(text)) if isinstance(default, int) and not isinstance(default, bool) else float(text)


def run_ours(d: dict[str, np.ndarray], alg: str, checkpoints: list[int], device: str, probe_from: int) -> Any:
    from reconstruction.driver import Reconstruction
    from reconstruction.engines import EngineSettings

    n = d["intensities"].shape[-1]
    rec = Reconstruction(d["intensities"], d["positions"], algorithm=alg, iterations=checkpoints[-1],
                         device=device, seed=0, probe=d["probe0"], beam_diameter_px=0.4 * n,
                         object_shape=d["truth"].shape,
                         settings=EngineSettings(update_probe_from=probe_from, phase_constraint=0, **OURS_OPTIONS))
    for it in range(1, checkpoints[-1] + 1):
        rec.step()
        if it in checkpoints:
            yield it, float(sum(rec.iteration_s)), rec.object()
    rec.close()


def run_tike(d: dict[str, np.ndarray], alg: str, checkpoints: list[int], device: str, probe_from: int) -> Any:
    import cupy as cp  # type: ignore[import-not-found]
    import tike.ptycho as tp  # type: ignore[import-not-found]

    n = d["intensities"].shape[-1]
    h, w = d["truth"].shape
    options = {"lstsq_grad": lambda: tp.LstsqOptions(num_iter=checkpoints[-1], num_batch=10),
               "rpie": lambda: tp.RpieOptions(num_iter=checkpoints[-1], num_batch=10),
               "dm": lambda: tp.DmOptions(num_iter=checkpoints[-1], num_batch=1)}[alg]()
    params = tp.PtychoParameters(
        probe=d["probe0"][None, None, None].astype(np.complex64), psi=np.ones((1, h + 2, w + 2), np.complex64),
        scan=d["positions"].astype(np.float32), algorithm_options=options,
        probe_options=tp.ProbeOptions(update_start=probe_from - 1),  # tike counts epochs from 0
        object_options=tp.ObjectOptions(),
        exitwave_options=tp.ExitWaveOptions(measured_pixels=np.ones((n, n), dtype=bool), noise_model="gaussian"))
    done, seconds = 0, 0.0
    with tp.Reconstruction(d["intensities"], params, num_gpu=1) as ctx:
        for it in checkpoints:
            cp.cuda.Device().synchronize()
            t0 = time.perf_counter()
            ctx.iterate(it - done)
            cp.cuda.Device().synchronize()
            seconds += time.perf_counter() - t0
            done = it
            psi = np.asarray(ctx.get_result().psi)
            yield it, seconds, psi.reshape(-1, *psi.shape[-2:])[0]


def run_ptychi(d: dict[str, np.ndarray], alg: str, checkpoints: list[int], device: str, probe_from: int) -> Any:
    import ptychi.api as api  # type: ignore[import-not-found]
    import torch  # type: ignore[import-not-found]
    from ptychi.api.task import PtychographyTask  # type: ignore[import-not-found]

    n = d["intensities"].shape[-1]
    h, w = d["truth"].shape
    gpu = device == "gpu"
    opts: Any = {"DM": api.DMOptions, "LSQML": api.LSQMLOptions}[alg]()
    opts.data_options.data = d["intensities"]
    opts.data_options.fft_shift = False
    opts.data_options.save_data_on_device = gpu
    opts.object_options.initial_guess = torch.ones((1, h, w), dtype=torch.complex64)
    opts.object_options.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
    opts.object_options.position_origin_coords = np.array([-0.5, -0.5])  # window top-left = our corner
    opts.probe_options.initial_guess = torch.as_tensor(d["probe0"][None, None])
    opts.probe_options.optimization_plan.start = probe_from - 1  # pty-chi counts epochs from 0
    opts.probe_position_options.position_y_px = d["positions"][:, 0] + n / 2
    opts.probe_position_options.position_x_px = d["positions"][:, 1] + n / 2
    opts.probe_position_options.optimizable = False
    opts.reconstructor_options.num_epochs = checkpoints[-1]
    opts.reconstructor_options.default_device = api.Devices.GPU if gpu else api.Devices.CPU
    if alg == "DM":
        opts.reconstructor_options.chunk_length = 100
    else:
        opts.reconstructor_options.batch_size = 100
    task = PtychographyTask(opts)
    done, seconds = 0, 0.0
    for it in checkpoints:
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        task.run(it - done)
        if gpu:
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        done = it
        obj = task.get_data_to_cpu("object", as_numpy=True)
        yield it, seconds, obj.reshape(-1, *obj.shape[-2:])[0]


def run_ptypy(d: dict[str, np.ndarray], alg: str, checkpoints: list[int], device: str, probe_from: int) -> Any:
    """PtyPy's NumPy engines (``device`` is ignored): the frames through a registered in-memory PtyScan, positions
    in metres of a nominal geometry, the guess as the illumination model, an object of ones."""
    from ptypy import utils as u  # type: ignore[import-not-found]
    from ptypy.core import Ptycho  # type: ignore[import-not-found]

    scan_class = _ptypy_scan_class()
    scan_class.FRAMES = np.fft.fftshift(d["intensities"], axes=(-2, -1))  # PtyPy's frames: beam at the centre
    n = d["intensities"].shape[-1]
    energy_kev, distance_m, det_px_m = 8.0, 1.0, 75e-6
    pixel_m = 1.2398419843320026e-9 / energy_kev * distance_m / (n * det_px_m)
    scan_class.POSITIONS_M = d["positions"] * pixel_m
    p = u.Param()
    p.verbose_level = "critical"
    p.io = u.Param(home="/tmp/ptypy_convergence", autosave=u.Param(active=False), autoplot=u.Param(active=False),
                   interaction=u.Param(active=False))
    p.scans = u.Param()
    p.scans.S = u.Param(name="Full")
    p.scans.S.data = u.Param(name="ConvergenceArrays", shape=n, num_frames=len(d["positions"]), save=None,
                             energy=energy_kev, distance=distance_m, psize=det_px_m, center=(n // 2, n // 2),
                             auto_center=False, orientation=0)
    p.scans.S.illumination = u.Param(model=d["probe0"].astype(np.complex64),
                                     aperture=None, propagation=None, diversity=None, photons=None)
    p.scans.S.sample = u.Param(model=None, fill=1.0)
    p.scans.S.coherence = u.Param(num_probe_modes=1, num_object_modes=1)
    p.engines = u.Param()
    p.engines.E = u.Param(name=alg, numiter=checkpoints[-1], numiter_contiguous=1,
                          probe_update_start=probe_from - 1)  # PtyPy counts iterations from 0
    if alg == "ML":
        p.engines.E.ML_type = "Gaussian"
        p.engines.E.reg_del2 = False
        p.engines.E.scale_precond = True
    P = Ptycho(p, level=4)
    engine = P.engines["E"]
    P.runtime.update(start=time.asctime(), iter_info=[], last_save=0, last_plot=0)  # what Ptycho.run() sets
    engine.initialize()
    P.new_data = [(s.label, s) for s in P.diff.S.values()]
    engine.prepare()
    done, seconds = 0, 0.0
    for it in checkpoints:
        t0 = time.perf_counter()
        engine.iterate(it - done)
        seconds += time.perf_counter() - t0
        done = it
        yield it, seconds, _ptypy_object_in_truth_frame(P, d)
    engine.finalize()


def _ptypy_object_in_truth_frame(P: Any, d: dict[str, np.ndarray]) -> np.ndarray:
    """PtyPy's object storage cropped so that its pixel (r, c) is the truth's: from the first view's corner."""
    storage = next(iter(P.obj.storages.values()))
    view = min((v for v in storage.views), key=lambda v: tuple(v.dlow))
    first = int(np.lexsort((d["positions"][:, 1], d["positions"][:, 0]))[0])
    offset = np.asarray(view.dlow) - d["positions"][first].astype(int)
    h, w = d["truth"].shape
    data = storage.data[0]
    r0, c0 = max(int(offset[0]), 0), max(int(offset[1]), 0)
    return data[r0:r0 + h, c0:c0 + w]


_SCAN_CLASS: Any = None


def _ptypy_scan_class() -> Any:
    """A PtyScan that serves class-held arrays (registered with PtyPy once per process)."""
    global _SCAN_CLASS
    if _SCAN_CLASS is None:
        from ptypy.core.data import PtyScan  # type: ignore[import-not-found]
        from ptypy.experiment import register  # type: ignore[import-not-found]

        @register()
        class ConvergenceArrays(PtyScan):
            """Frames and positions held by the class (set before each run).

            Defaults:

            [name]
            default = ConvergenceArrays
            type = str
            help =
            """

            FRAMES: np.ndarray = np.zeros((0, 1, 1))
            POSITIONS_M: np.ndarray = np.zeros((0, 2))

            def load_positions(self) -> np.ndarray:
                return self.POSITIONS_M

            def load(self, indices: Any) -> tuple[dict, dict, dict]:
                return {i: self.FRAMES[i] for i in indices}, {}, {}

        _SCAN_CLASS = ConvergenceArrays
    return _SCAN_CLASS


RUNNERS: dict[str, Snapshot] = {"ours": run_ours, "tike": run_tike, "ptychi": run_ptychi, "ptypy": run_ptypy}


# ---------------------------------------------------------------------------------------------- worker / main
def worker(args: argparse.Namespace) -> None:
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",")})
    OURS_OPTIONS.update({k: ours_option(k, v) for k, v in (kv.split("=") for kv in args.ours_options.split(",") if kv)})
    algs = [a for a in CODES[args.code] if not args.algs or a in args.algs.split(",")]
    for path in args.data.split(","):
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        case = Path(path).stem.split("_")
        for alg in algs:
            base = {"code": args.code, "alg": alg, "object": case[1], "guess": case[2],
                    "n": int(d["intensities"].shape[-1]), "positions": int(d["intensities"].shape[0])}
            try:
                for it, seconds, obj in RUNNERS[args.code](d, alg, checkpoints, args.device, args.probe_from):
                    row = dict(base, iteration=it, seconds=seconds, nrmse=object_error(d, obj))
                    print("CONVERGE " + json.dumps(row), flush=True)
            except Exception as exc:  # a peer that fails is recorded, not fatal
                print("CONVERGE " + json.dumps(dict(base, failed=f"{type(exc).__name__}: {exc}"[:400])),
                      flush=True)


def table(rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if "failed" not in r]
    its = sorted({r["iteration"] for r in ok})
    columns = sorted({(r["code"], r["alg"]) for r in ok}, key=lambda c: (list(CODES).index(c[0]), c[1]))
    by = {(r["object"], r["guess"], r["iteration"], r["code"], r["alg"]): r for r in ok}
    names = " | ".join(f"{c} {a}" for c, a in columns)
    head = f"| object | guess | iteration | {names} | ours best | peers best |"
    out = [head, "|" + "---|" * (5 + len(columns))]
    verdicts = []
    for obj in OBJECTS:
        for guess in GUESSES:
            for it in its:
                cells = [by.get((obj, guess, it, c, a)) for c, a in columns]
                if not any(cells):
                    continue
                ours = [r["nrmse"] for r in cells if r and r["code"] == "ours"]
                peers = [(r["nrmse"], f"{r['code']} {r['alg']}") for r in cells if r and r["code"] != "ours"]
                best_ours = min(ours) if ours else None
                best_peer = min(peers) if peers else None
                out.append(f"| {obj} | {guess} | {it} | "
                           + " | ".join(f"{r['nrmse']:.4f}" if r else "" for r in cells)
                           + f" | {'' if best_ours is None else f'{best_ours:.4f}'} | "
                           + (f"{best_peer[0]:.4f} ({best_peer[1]})" if best_peer else "") + " |")
                if best_ours is not None and best_peer is not None:
                    verdicts.append(best_ours <= best_peer[0])
    failed = [f"{r['code']} {r['alg']} {r['object']}/{r['guess']}: {r['failed'][:160]}" for r in rows if "failed" in r]
    out.append(f"\nours best <= peers best in {sum(verdicts)} of {len(verdicts)} (case, iteration) cells")
    out += [f"failed: {f}" for f in failed]
    return "\n".join(out)


def orchestrate(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache)
    t0 = time.perf_counter()
    paths = [make_case(cache, kind, guess, args.size, args.scan, args.photons)
             for kind in args.objects.split(",") for guess in args.guesses.split(",")]
    print(f"# {len(paths)} cases ready in {time.perf_counter() - t0:.1f} s", flush=True)
    rows: list[dict[str, Any]] = []
    with open(out / "convergence_peers.log", "a") as log:
        for code in [c for c in args.codes.split(",") if c]:
            cmd = [sys.executable, __file__, "--worker", "--code", code, "--data", ",".join(map(str, paths)),
                   "--device", args.device, "--checkpoints", args.checkpoints, "--algs", args.algs,
                   "--probe-from", str(args.probe_from), "--ours-options", args.ours_options]
            t1 = time.perf_counter()
            got, code_rc, stderr = run_rows(cmd, "CONVERGE", args.timeout, log, code)
            print(f"# {code}: {len(got)} rows in {time.perf_counter() - t1:.0f} s (exit {code_rc})"
                  + ("" if got and code_rc == 0 else f": {stderr}"), flush=True)
            keep_rows(rows, got, out / "convergence_peers.json")
        show(table(rows), log)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--codes", default="ours,tike,ptychi,ptypy")
    p.add_argument("--algs", default="", help="only these of each code's algorithms (names as in CODES; default: all)")
    p.add_argument("--objects", default=",".join(OBJECTS))
    p.add_argument("--guesses", default=",".join(GUESSES))
    p.add_argument("--checkpoints", default="30,50,100")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--scan", type=int, default=16)
    p.add_argument("--photons", type=float, default=1e6)
    p.add_argument("--ours-options", default="",
                   help="EngineSettings fields for our runs, name=number,... (e.g. beta_decay=0.003; default: none)")
    p.add_argument("--probe-from", type=int, default=1,
                   help="every code updates the probe from this iteration (1 = the first, pty-chi's default)")
    p.add_argument("--out", default="benchmarks/out")
    p.add_argument("--cache", default="/tmp/ptychopy_convergence")
    p.add_argument("--timeout", type=float, default=500)
    p.add_argument("--code", choices=tuple(CODES), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    worker_or_orchestrator(p, worker, orchestrate)


if __name__ == "__main__":
    main()
