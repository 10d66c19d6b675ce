"""Listing 1 of the ptychopy paper, verbatim, timed: ePIE on the simulated 512^2, 30x30 scan, 100 iterations.

    python3 benchmarks/listing1.py            # prints the wall time of each stage and the final errors

The listing's own lines run unchanged through ``ptychopy``; around them this script only reads clocks and, before
``epiepost()``, the final Fourier error from the session and the object NRMSE against the simulation's truth.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import numpy as np

    import ptychopy
    from ptychopy import session
    from reconstruction.metrics import illuminated_region, object_nrmse
    from reconstruction.simulate import simulate_from_parameters

    t_all = time.perf_counter()
    # ---- Listing 1 (verbatim) ----
    cmdstr = ("./ptycho -jobID=sim512 -beamSize=110e-9 -scanDims=30,30 -step=50e-9,50e-9 -i=100 -size=512 "
              "-lambda=2.4796837508399954e-10 -dx_d=172e-6 -z=1 -simulate=1 -blind=0")
    its = 100
    t0 = time.perf_counter()
    ptychopy.epieinit(cmdstr)
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _i in range(its):
        ptychopy.epiestep()
    t_steps = time.perf_counter() - t0
    resobj = ptychopy.epieresobj()
    resprobe = ptychopy.epieresprobe()
    # ---- measurements (not part of the listing) ----
    s = session.get("epie", "epieresobj")
    rec = s.rec
    sim = simulate_from_parameters(s.params)
    nr = object_nrmse(sim.object_truth, resobj, illuminated_region(rec.illumination(), 0.3))
    device, errors, per_it = rec.device, list(rec.errors), list(rec.iteration_s)
    single = getattr(rec, "engine", None)  # a one-device Reconstruction (a split run has one per region)
    engine = type(single).__name__ if single is not None else type(rec).__name__
    print(f"LISTING1 device={device} engine={engine} object={resobj.shape} {resobj.dtype} probe={resprobe.shape}")
    print(f"LISTING1 epieinit {t_init:.2f} s (simulation + upload), 100 x epiestep {t_steps:.2f} s "
          f"({1e3 * float(np.median(per_it[3:])):.2f} ms median per iteration)", flush=True)
    print(f"LISTING1 Fourier error first {errors[0]:.5f} final {errors[-1]:.5f}; object NRMSE vs truth {nr:.4f}",
          flush=True)
    # ---- Listing 1 (verbatim) ----
    t0 = time.perf_counter()
    ptychopy.epiepost()
    t_post = time.perf_counter() - t0
    print(f"LISTING1 epiepost {t_post:.2f} s (writes data/sim512_*), whole listing {time.perf_counter() - t_all:.2f} s")


if __name__ == "__main__":
    main()
