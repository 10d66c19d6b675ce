"""How an engine's per-position steps answer a move of its windows (issue 17: DM's runaway from a guessed probe).

    python benchmarks/dm_step_response.py                          # DM, the probe guessed from the data
    python benchmarks/dm_step_response.py --engine ePIE
    python benchmarks/dm_step_response.py --probe known
    python benchmarks/dm_step_response.py --drop-memory            # DM with the moved windows' memory dropped

The target scan of ``position_correction.py`` (64^2, 10 x 10, +-3 px random errors; no stretch here), refining from
iteration 5 without coarse search or affine fit. The positions are held (no step taken) for ``--at`` iterations,
then every window is moved by a random d (uniform +-0.3 px, mean 0) as a step moves it (for DM: psi's
overlap-consistent part taken anew, its memory psi - phi kept), and held again. Each later iteration prints the
steps the engine would take, regressed on d ("along d": > 0 continues the move, < 0 pulls it back) and on the
position error e ("along e": < 0 towards the truth), with DM's memory share ||psi - phi|| / ||phi||.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.engines import dm as dm_engine
from reconstruction.physics import patches
from reconstruction.physics import position_update as pu
from reconstruction.simulate import raster_px, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="DM")
    ap.add_argument("--probe", choices=("known", "guessed"), default="guessed")
    ap.add_argument("--at", type=int, default=30, help="iteration after which the windows are moved")
    ap.add_argument("--after", type=int, default=8, help="iterations printed after the move")
    ap.add_argument("--drop-memory", action="store_true", help="DM: psi = phi for the moved windows")
    args = ap.parse_args()

    n = 64
    nominal = raster_px((10, 10), n / 10) + 8.0
    true = nominal + np.random.default_rng(5).uniform(-3, 3, nominal.shape)
    sim = simulate(size_px=n, photons=1e6, seed=3, positions_px=true, subpixel=True)
    h, w = sim.object_truth.shape
    known = args.probe == "known"
    settings = EngineSettings(update_probe_from=10**6 if known else 2, phase_constraint=0, subpixel_windows=True,
                              position_refinement_from=5)
    rec = Reconstruction(sim.data.intensities, nominal, algorithm=args.engine, iterations=args.at + args.after,
                         seed=0, device="cpu", probe=sim.probe_truth if known else None, beam_diameter_px=0.4 * n,
                         object_shape=(h + 12, w + 12), settings=settings)
    engine, st = rec.engine, rec.state
    positions: Any = st.positions_px  # (N, 2) float64, refined in place
    refiner = engine.refiner
    steps: list[Any] = []

    def end_epoch() -> None:  # keep the epoch's steps, move nothing
        _, num, den = (np.concatenate(parts) for parts in zip(*refiner._collected, strict=True))
        refiner._collected = []
        steps.append(refiner.gain * pu.damped_steps(np, num, den, refiner.damping))

    refiner.end_epoch = end_epoch
    dm_engine.set_step_cadence = lambda *_: None  # every epoch's steps, whatever DM's memory
    for _ in range(args.at):
        rec.step()
    d = np.random.default_rng(11).uniform(-0.3, 0.3, positions.shape)
    d -= d.mean(axis=0)
    e = positions - true
    e -= e.mean(axis=0)
    corners = np.stack([st.rows, st.cols], axis=1).copy()
    is_dm = hasattr(engine, "_follow_positions")
    if is_dm:
        m = st.modes_active
        old_phi = engine._lit_probes(m) * patches.extract_patches(np, st.obj, st.window_idx())[:, None]
    refiner._set(slice(None), positions + d)
    if is_dm:
        engine._positions_moved(corners)
        engine._follow_positions(old_phi, corners)
        if args.drop_memory:
            engine.psi[:, :m] = engine._lit_probes(m) * patches.extract_patches(np, st.obj, st.window_idx())[:, None]
    steps.clear()
    for it in range(args.at + 1, args.at + args.after + 1):
        rec.step()
        s = steps[-1] - steps[-1].mean(axis=0)
        line = (f"{args.engine} probe {args.probe} iteration {it}: steps along d {(s * d).sum() / (d**2).sum():+.3f}, "
                f"along e {(s * e).sum() / (e**2).sum():+.4f}, rms {np.sqrt((s**2).sum(axis=1).mean()):.3f} px")
        if is_dm:
            m = st.modes_active
            phi = engine._lit_probes(m) * patches.extract_patches(np, st.obj, st.window_idx())[:, None]
            line += f", memory share {np.linalg.norm(engine.psi[:, :m] - phi) / np.linalg.norm(phi):.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
