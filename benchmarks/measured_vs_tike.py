"""Issue 17's measured-data target: ptychopy's LSQML (sub-pixel windows, position correction, optionally the flux
fit) beside tike's ``lstsq_grad`` with its position correction, on the measured Siemens star
(``benchmarks/data/tike_siemens_star``), on one GPU, at equal iterations.

    python3 benchmarks/measured_vs_tike.py --device gpu --iterations 100 --out benchmarks/out      # the GPU run
    python3 benchmarks/measured_vs_tike.py --device cpu --impls ours --positions 120 --size 64 \\
        --iterations 20 --checkpoints 5,10,20                                                    # a CPU check

Both codes get the same inputs: the frames and fractional positions as ptychopy's CXI reader returns them
(``measured_data.load_cxi``), tike's probe guess from the archive cropped to ``--size`` and scaled to the mean
frame's photons, an object of ones with ``--pad`` pixels of room around the scan, and 1 probe mode (``--modes``).
Our LSQML runs with the product's defaults: a constant step and the mean of its iterates reported (``-meanSpan``
5, ``--mean-span``; 1 = the last iterate, which stalls at a residual of 0.0130 on this scan from about iteration
15: benchmarks/RESULTS.md, "LSQML's stochastic floor"); ``--beta-decay 0.003`` adds ``-betaDecay``.
Each code runs in its own process and stops at each checkpoint: the time is the sum of its synchronised iteration
times (the checkpoint itself is not timed), and the object, probe, positions (and our flux factors) are copied to
the host and judged by ``measured_data.amplitude_residual``, a NumPy function of neither code, in both windowing
conventions (bilinear = tike's, Fourier = ours). Prints one ``MEASURED`` JSON line per checkpoint, then a table:
residual against iterations and the time each code took to reach tike's final residual.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))  # its helpers, also when imported as benchmarks.<name> (last: no shadowing)

import measured_data as md  # noqa: E402  (benchmarks/ is the script's own folder)
from worker_rows import keep_rows, run_rows, show, worker_or_orchestrator  # noqa: E402

IMPLS = ("ours", "tike")


def prepare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The common inputs: frames, positions (+pad), probe guess, object shape; read through the CXI reader."""
    scan = md.read_archive()
    if args.positions < scan.positions_px.shape[0]:
        scan = md.central_subset(scan, args.positions)
    cxi = md.write_cxi(workdir / "measured.cxi", scan)
    data = md.load_cxi(cxi, scan.positions_px.shape[0], args.size)
    n = args.size
    probe = md.crop_probe(scan.probe, n)
    probe *= np.sqrt(data.intensities.sum(axis=(1, 2)).mean() / (np.abs(probe) ** 2).sum())
    positions = data.positions_px - data.positions_px.min(axis=0) + args.pad
    shape = tuple(int(v) for v in np.ceil(positions.max(axis=0)) + n + args.pad)
    return {"intensities": data.intensities, "positions": positions, "probe": probe.astype(np.complex64),
            "object_shape": shape, "valid": data.valid_mask}


def residuals(d: dict[str, Any], obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
              scale: np.ndarray | None) -> dict[str, Any]:
    """The residual in both windowings; NaN (and why) when a code moved a window off its object."""
    out: dict[str, Any] = {}
    for kind in md.INTERPOLATIONS:
        try:
            out[f"residual_{kind}"] = md.amplitude_residual(d["intensities"], obj, probe, positions,
                                                            interpolation=kind, intensity_scale=scale,
                                                            valid=d["valid"])
        except ValueError as exc:
            out[f"residual_{kind}"], out["residual_note"] = float("nan"), str(exc)
    return out


def shift_px(d: dict[str, Any], positions: np.ndarray) -> float:
    """RMS distance (px) the positions moved from the given ones, after removing the mean shift."""
    moved = positions - d["positions"]
    moved -= moved.mean(axis=0)
    return float(np.sqrt((moved ** 2).sum(axis=1).mean()))


def run_ours(d: dict[str, Any], args: argparse.Namespace, checkpoints: list[int]) -> list[dict[str, Any]]:
    from reconstruction.driver import Reconstruction
    from reconstruction.engines import EngineSettings

    settings = EngineSettings(update_probe_from=args.probe_from, phase_constraint=0, subpixel_windows=True,
                              position_refinement_from=args.pps, variable_intensity=args.variable_intensity,
                              beta_decay=args.beta_decay, mean_span=args.mean_span, batch_size=args.batch_size)
    rec = Reconstruction(d["intensities"], d["positions"], algorithm="LSQML", iterations=checkpoints[-1],
                         device=args.device, seed=0, probe=d["probe"], probe_modes=args.modes,
                         object_shape=d["object_shape"], valid_mask=d["valid"], settings=settings)
    rows = []
    for it in range(1, checkpoints[-1] + 1):
        rec.step()
        if it in checkpoints:
            positions = rec.positions()
            row = {"impl": "ours", "iteration": it, "elapsed_s": float(sum(rec.iteration_s)),
                   "engine": type(rec.engine).__name__, "plan": rec.plan.implementation_reason,
                   "beta_decay": args.beta_decay, "mean_span": args.mean_span,
                   "batch_size": args.batch_size, "beta": float(rec.engine.beta),
                   "moved_px": shift_px(d, positions)}
            row.update(residuals(d, rec.object(), rec.probe(), positions, rec.intensity_scale()))
            rows.append(row)
            print("MEASURED " + json.dumps(row), flush=True)
    rec.close()
    return rows


def run_tike(d: dict[str, Any], args: argparse.Namespace, checkpoints: list[int]) -> list[dict[str, Any]]:
    import cupy as cp  # type: ignore[import-not-found]
    import tike.ptycho as tp  # type: ignore[import-not-found]

    n = d["probe"].shape[-1]
    probe = d["probe"][None, None].astype(np.complex64)  # (1, 1, 1, n, n): tike's (1, 1, shared modes, n, n)
    if args.modes > 1:
        probe = tp.probe.add_modes_cartesian_hermite(probe, args.modes)
    scan = d["positions"].astype(np.float32)
    params = tp.PtychoParameters(
        probe=probe, psi=np.ones((1, *d["object_shape"]), dtype=np.complex64), scan=scan,
        algorithm_options=tp.LstsqOptions(num_iter=checkpoints[-1], num_batch=args.tike_batches),
        # tike counts epochs from 0. Its lstsq_grad gathers the position gradients from the object patches it
        # makes only in epochs that update the probe: with position options, an epoch without a probe update fails
        # (tike 0.26.0, lstsq.py keep_some_args_constant: bpatches is None), so both codes update the probe from
        # --probe-from = 1 by default (measured on the H100, 2026-12-07: update_start=1 failed in epoch 0).
        probe_options=tp.ProbeOptions(update_start=args.probe_from - 1), object_options=tp.ObjectOptions(),
        position_options=tp.PositionOptions(scan, use_adaptive_moment=True, use_position_regularization=True,
                                            update_start=max(args.pps - 1, args.probe_from - 1)),
        exitwave_options=tp.ExitWaveOptions(measured_pixels=np.ones((n, n), dtype=bool) if d["valid"] is None
                                            else np.asarray(d["valid"]), noise_model="gaussian"),
    )
    rows, elapsed, done = [], 0.0, 0
    with tp.Reconstruction(d["intensities"].astype(np.float32), params, num_gpu=1) as ctx:
        for it in checkpoints:
            cp.cuda.Device().synchronize()
            t0 = time.perf_counter()
            ctx.iterate(it - done)
            cp.cuda.Device().synchronize()
            elapsed += time.perf_counter() - t0
            done = it
            result = ctx.get_result()
            obj = np.asarray(result.psi).reshape(-1, *np.shape(result.psi)[-2:])[0]
            probe_now = np.asarray(result.probe).reshape(-1, n, n)
            positions = np.asarray(result.scan, dtype=np.float64).reshape(-1, 2)
            row = {"impl": "tike", "iteration": it, "elapsed_s": elapsed, "engine": "tike lstsq_grad",
                   "plan": f"{args.tike_batches} batches, position correction (adaptive moment, regularised)",
                   "moved_px": shift_px(d, positions)}
            row.update(residuals(d, obj, probe_now, positions, None))
            rows.append(row)
            print("MEASURED " + json.dumps(row), flush=True)
    return rows


def worker(args: argparse.Namespace) -> None:
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",") if c} | {args.iterations})
    checkpoints = [c for c in checkpoints if 0 < c <= args.iterations]
    with tempfile.TemporaryDirectory() as tmp:
        d = prepare(args, Path(tmp))
    print(f"# {args.impl}: {d['intensities'].shape[0]} frames of {args.size}^2, object {d['object_shape']}",
          flush=True)
    row0 = {"impl": args.impl, "iteration": 0, "elapsed_s": 0.0, "moved_px": 0.0}
    row0.update(residuals(d, np.ones(d["object_shape"], np.complex64), d["probe"], d["positions"], None))
    print("MEASURED " + json.dumps(row0), flush=True)
    (run_ours if args.impl == "ours" else run_tike)(d, args, checkpoints)


def table(rows: list[dict[str, Any]]) -> str:
    """Residual (bilinear / Fourier windows) and seconds at each checkpoint, one column per code; then the time each
    code took to reach tike's final residual (by the first checkpoint at or below it)."""
    impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]
    its = sorted({r["iteration"] for r in rows})
    by = {(r["impl"], r["iteration"]): r for r in rows}
    out = ["| iteration | " + " | ".join(f"{i} residual (bilinear / Fourier) | {i} s" for i in impls) + " |",
           "|---|" + "---|---|" * len(impls)]
    for it in its:
        cells = []
        for i in impls:
            r = by.get((i, it))
            cells += ([f"{r['residual_bilinear']:.5f} / {r['residual_fourier']:.5f}", f"{r['elapsed_s']:.2f}"]
                      if r else ["", ""])
        out.append(f"| {it} | " + " | ".join(cells) + " |")
    run = [r for r in rows if r["iteration"] > 0]  # iteration 0 is the common start: a code that failed has only it
    finals = {i: max((r for r in run if r["impl"] == i), key=lambda r: r["iteration"]) for i in impls
              if any(r["impl"] == i for r in run)}
    if "tike" in finals and "ours" in finals:
        for kind in md.INTERPOLATIONS:
            target = finals["tike"][f"residual_{kind}"]
            reach = {i: next((r for r in sorted((r for r in run if r["impl"] == i), key=lambda r: r["iteration"])
                              if r[f"residual_{kind}"] <= target), None) for i in impls}
            said = ", ".join(f"{i} at iteration {r['iteration']} in {r['elapsed_s']:.2f} s" if r else f"{i} never"
                             for i, r in reach.items())
            ratio = (f"; tike's time / ours = {reach['tike']['elapsed_s'] / reach['ours']['elapsed_s']:.1f}x"
                     if reach["ours"] and reach["tike"] and reach["ours"]["elapsed_s"] > 0 else "")
            out.append(f"\nTime to tike's final {kind} residual {target:.5f}: {said}{ratio}")
    else:
        out.append(f"\nno comparison: iterations only from {', '.join(finals) or 'no code'}")
    return "\n".join(out)


def orchestrate(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with open(out / "measured_vs_tike.log", "a") as log:
        _orchestrate(args, out, rows, log)


def _orchestrate(args: argparse.Namespace, out: Path, rows: list[dict[str, Any]], log: Any) -> None:
    for impl in [i for i in args.impls.split(",") if i]:
        cmd = [sys.executable, __file__, "--worker", "--impl", impl] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("worker", "impl", "out", "impls", "timeout", "variable_intensity")]
        cmd += ["--variable-intensity"] if args.variable_intensity else []
        t0 = time.perf_counter()
        got, code, stderr = run_rows(cmd, "MEASURED", args.timeout, log, impl)
        for row in got:
            print("MEASURED " + json.dumps(row), flush=True)
        if code != 0 or not got:
            print(f"# {impl} FAILED (exit {code}, {time.perf_counter() - t0:.0f} s): {stderr}", flush=True)
        keep_rows(rows, got, out / "measured_vs_tike.json")
    show(table(rows), log)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--impls", default="ours,tike")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--checkpoints", default="1,2,5,10,20,30,50,75,100")
    p.add_argument("--positions", type=int, default=516, help="the N positions nearest the centre (516 = all)")
    p.add_argument("--size", type=int, default=128, help="patterns cropped to size^2 around the beam (128 = whole)")
    p.add_argument("--pad", type=int, default=8, help="object pixels of room around the scan")
    p.add_argument("--modes", type=int, default=1)
    p.add_argument("--pps", type=int, default=2, help="position correction from this iteration (both codes)")
    p.add_argument("--probe-from", type=int, default=1, help="probe updates from this iteration (both codes;"
                   " tike needs them in every epoch of position correction)")
    p.add_argument("--variable-intensity", action="store_true", help="our LSQML also fits each position's flux")
    p.add_argument("--beta-decay", type=float, default=0.0,
                   help="our LSQML's -betaDecay: halve its step after an iteration whose error fell by less than this"
                   " fraction (0 = the product default, a constant step; 0.003 took the plateau from 0.0130 to 0.0114)")
    p.add_argument("--mean-span", type=int, default=5,
                   help="our LSQML's -meanSpan: the run reports the exponential mean of its iterates with this span "
                   "(5 = the product default; 1 = the last iterate, as before 2026-12-07 evening)")
    p.add_argument("--batch-size", type=int, default=0, help="our LSQML's mini-batch (0: the default, about N/40)")
    p.add_argument("--tike-batches", type=int, default=10)
    p.add_argument("--out", default="benchmarks/out")
    p.add_argument("--timeout", type=float, default=500)
    p.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    worker_or_orchestrator(p, worker, orchestrate)


if __name__ == "__main__":
    main()
