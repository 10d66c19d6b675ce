"""Position correction against the issue's target (issue 17, item 2): +-3 px random errors, a 1 % stretch and a
0.5 degree turn of the scan; each engine's refined positions against the truth and its object NRMSE against the
same run given the true positions.

    python benchmarks/position_correction.py                              # 64^2, 10 x 10: the CI test's scan
    python benchmarks/position_correction.py --size 128 --scan 12 --engines LSQML,ePIE
    python benchmarks/position_correction.py --probe guessed              # the probe from the data, not known
    python benchmarks/position_correction.py --device gpu --engines ePIE,DM  # the fast GPU engines
    python benchmarks/position_correction.py --size 128 --scan 12 --engines LSQML --affine-delay 40 \
        --affine-epochs 20 --start true --every 10               # the noise floor: refining from the truth

The scan: size^2 patterns, a scan x scan raster with step size/10 and beam 0.4 size, Poisson 1e6; true positions =
the raster stretched by ``--stretch`` and turned by ``--turn-deg`` about its centre plus uniform +-``--random-px``
errors; the raster is given (``--start true``: the true positions, refined all the same, which shows where the
data's noise alone takes them; ``--photons`` sets the dose). The NRMSE removes the object's shift to a fraction of a
pixel (the scan's common offset, which the data cannot see, stays where the given raster's mean puts it;
``metrics.remove_ambiguities``); the figures with whole-pixel shifts only follow. ``--probe known`` (default) starts
from the true probe and holds it, ``guessed`` builds the guess from the data and updates it from iteration 2 (held
during the affine fit). Settings: refinement from ``--pps``, a coarse search of radius ``--coarse`` in its first 5
iterations, every linear affine term free, fitted in refining iterations ``--affine-delay`` + 1 .. +
``--affine-epochs``. Prints one ``POSCORR`` line per engine (position RMS given -> refined after removing the mean
offset, NRMSE refined and with the true positions, seconds) and what is left of the error: its affine part and the
rest.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.metrics import illuminated_region, object_nrmse
from reconstruction.physics import position_update as pu
from reconstruction.simulate import raster_px, simulate


def position_error_px(positions: np.ndarray, true: np.ndarray) -> float:
    """RMS distance (px) after removing the mean offset (a common shift only translates the image)."""
    d = positions - true
    d -= d.mean(axis=0)
    return float(np.sqrt((d**2).sum(axis=1).mean()))


def ring_errors_px(positions: np.ndarray, true: np.ndarray, nominal: np.ndarray) -> tuple[float, float, float]:
    """RMS distance (px, mean offset removed over all windows) of the scan's outer ring of windows (first or last
    row or column of the raster ``nominal`` (N, 2)), of the rest, and the worst window's."""
    d = positions - true
    d -= d.mean(axis=0)
    dist2 = (d**2).sum(axis=1)
    edge = np.any((nominal == nominal.min(axis=0)) | (nominal == nominal.max(axis=0)), axis=1)
    return (float(np.sqrt(dist2[edge].mean())), float(np.sqrt(dist2[~edge].mean())), float(np.sqrt(dist2.max())))


def affine_and_rest_px(positions: np.ndarray, true: np.ndarray) -> tuple[float, float, dict[str, float]]:
    """RMS (px) of the affine part (mean offset removed) and of the rest of positions - true, and the affine map
    from the true positions to these (scale, asymmetry, rotation_deg, shear)."""
    cols = pu.affine_columns(np, true, pu.AFFINE_TERMS).reshape(-1, 6)
    d = positions - true
    fitted = (cols @ np.linalg.lstsq(cols, d.ravel(), rcond=None)[0]).reshape(d.shape)
    rest = d - fitted
    fitted -= fitted.mean(axis=0)
    return (float(np.sqrt((fitted**2).sum(axis=1).mean())), float(np.sqrt((rest**2).sum(axis=1).mean())),
            pu.describe_affine(np, pu.fit_affine(np, true, positions)[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--scan", type=int, default=10)
    ap.add_argument("--random-px", type=float, default=3.0)
    ap.add_argument("--stretch", type=float, default=1.01)
    ap.add_argument("--turn-deg", type=float, default=0.5)
    ap.add_argument("--engines", default="LSQML,ePIE,DM")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--pps", type=int, default=5)
    ap.add_argument("--coarse", type=int, default=3)
    ap.add_argument("--coarse-epochs", type=int, default=5)
    ap.add_argument("--affine-delay", type=int, default=30)
    ap.add_argument("--affine-epochs", type=int, default=100)
    ap.add_argument("--probe", choices=("known", "guessed"), default="known")
    ap.add_argument("--fourier-relax", type=float, default=EngineSettings.dm_relax,
                    help="DM's noise ball (-fourierRelax), relative rms of the measured amplitudes")
    ap.add_argument("--photons", type=float, default=1e6, help="counts per pattern (Poisson)")
    ap.add_argument("--start", choices=("given", "true"), default="given",
                    help="refine from the given raster or from the true positions (the noise floor)")
    ap.add_argument("--every", type=int, default=0, help="print the position errors every this many iterations")
    ap.add_argument("--device", default="cpu", help="cpu, or gpu (each engine's fast path where the plan allows)")
    args = ap.parse_args()

    n = args.size
    nominal = raster_px((args.scan, args.scan), n / 10) + 8.0
    centre = nominal.mean(axis=0)
    t = np.deg2rad(args.turn_deg)
    linear = args.stretch * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    true = centre + (nominal - centre) @ linear.T
    true += np.random.default_rng(5).uniform(-args.random_px, args.random_px, true.shape)
    sim = simulate(size_px=n, photons=args.photons, seed=3, positions_px=true, subpixel=True)
    h, w = sim.object_truth.shape
    known = args.probe == "known"

    def run(algorithm: str, positions: np.ndarray, refine: bool) -> tuple[Reconstruction, float, float, float]:
        settings = EngineSettings(
            update_probe_from=10**6 if known else 2, phase_constraint=0, subpixel_windows=True,
            position_refinement_from=args.pps if refine else 0,
            position_affine=("scale", "asymmetry", "rotation", "shear"), coarse_search_px=args.coarse,
            coarse_search_epochs=args.coarse_epochs, affine_delay=args.affine_delay, affine_epochs=args.affine_epochs,
            dm_relax=args.fourier_relax)
        start = time.perf_counter()
        rec = Reconstruction(sim.data.intensities, positions, algorithm=algorithm, iterations=args.iterations,
                             seed=0, device=args.device, probe=sim.probe_truth if known else None,
                             beam_diameter_px=0.4 * n, object_shape=(h + 2 * int(args.random_px + 3),
                                                                     w + 2 * int(args.random_px + 3)),
                             settings=settings)
        for progress in rec:
            if refine and args.every and progress.iteration % args.every == 0:
                edge_px, inside_px, _ = ring_errors_px(rec.positions(), true, nominal)
                print(f"  {algorithm} iteration {progress.iteration}: positions "
                      f"{position_error_px(rec.positions(), true):.3f} px, edge {edge_px:.3f}, inside {inside_px:.3f}",
                      flush=True)
        region = illuminated_region(rec.illumination()[:h, :w], 0.3)
        seconds = time.perf_counter() - start
        estimate = rec.object()[:h, :w]
        return (rec, object_nrmse(sim.object_truth, estimate, region, subpixel_shift=True),
                object_nrmse(sim.object_truth, estimate, region), seconds)

    for algorithm in args.engines.split(","):
        _, nrmse_true, whole_true, _ = run(algorithm, true, refine=False)
        start = true if args.start == "true" else nominal
        rec, nrmse, whole, seconds = run(algorithm, start, refine=True)
        print(f"POSCORR {algorithm} size={n} scan={args.scan}x{args.scan} probe={args.probe} photons={args.photons:g} "
              f"positions_px {position_error_px(start, true):.3f} -> {position_error_px(rec.positions(), true):.3f} "
              f"nrmse {nrmse:.4f} true_positions {nrmse_true:.4f} ratio {nrmse / nrmse_true:.2f} "
              f"seconds {seconds:.1f} device {args.device} engine {type(rec.engine).__name__}", flush=True)
        print(f"  whole-pixel shift only: nrmse {whole:.4f} true_positions {whole_true:.4f} "
              f"ratio {whole / whole_true:.2f}", flush=True)
        edge_px, inside_px, worst_px = ring_errors_px(rec.positions(), true, nominal)
        print(f"  rings: edge {edge_px:.3f} px, inside {inside_px:.3f} px, worst window {worst_px:.3f} px", flush=True)
        affine_px, rest_px, described = affine_and_rest_px(rec.positions(), true)
        print(f"  left: affine part {affine_px:.3f} px, the rest {rest_px:.3f} px; refined/true: "
              + ", ".join(f"{k} {v:.4f}" for k, v in described.items()), flush=True)


if __name__ == "__main__":
    main()
