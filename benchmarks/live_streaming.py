"""Issue 21 on the CPU: a simulated detector writes a 40 x 40 scan of 64^2 frames with SWMR at 200 frames/s
(``ptychopy simwrite``, its own process) while ``ptychopy run -liveSource=swmr`` reconstructs (another process);
then a batch ``ptychopy run`` of the finished file with as many epochs as the live run ran in all. Prints one
JSON object: frames planned/received/dropped, the writer's rate, the time from the last frame to the written result
(and without the finishing iterations), and the NRMSE of the live object against the batch object and of both
against the simulation's truth (illuminated region, after scale/ramp/shift).

    .venv/bin/python benchmarks/live_streaming.py [--algorithm ePIE] [--finish 20] [--rate 200] [--dims 40,40]

``--ingest``: the GPU ingest target (issue 21): for each source (``replay``: a file of ``--distinct`` frames
cycled by ``ReplaySource(cycle=True)`` in this process; ``pva``: ``ptychopy simioc --stream pva`` in its own
process on a loopback port pair, read by ``PvaSource``) and each rate of the ramp, a streaming run
(``StreamingRun``, ``-liveWindow``, no finishing epochs) takes in ``rate x --seconds`` frames (at most
``--max-frames``) of ``--size``^2 on ``--device``. Prints one ``INGEST {...}`` line per run: frames planned,
received, dropped, the rate achieved, the object's lag behind the newest frame it holds at the end of each epoch
(p50/p95/max, after ``--warmup`` s), the host time per frame of the ingest (preprocessing, staging, upload), the
host-to-device copies, and whether the rate was sustained (every frame, none dropped, rate within 3 %, lag p95
<= 1 s); then a table with the highest sustained rate per source. A source's ramp stops at its first rate not
sustained.

    python3 benchmarks/live_streaming.py --ingest --device gpu --size 256 --rates 3000,4500,6000 --seconds 30
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it

from reconstruction.io import read_result  # noqa: E402
from reconstruction.metrics import illuminated_region, object_nrmse  # noqa: E402
from reconstruction.parameters import Parameters  # noqa: E402
from reconstruction.simulate import simulate_from_parameters  # noqa: E402

PTYCHOPY = [sys.executable, "-m", "ptychopy"]


def live_line(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("live: "))[6:])


def main() -> int:
    if "--ingest" in sys.argv:
        from live_ingest import ingest_main

        return ingest_main([a for a in sys.argv[1:] if a != "--ingest"])
    ap = argparse.ArgumentParser()
    ap.add_argument("--algorithm", default="ePIE")
    ap.add_argument("--finish", type=int, default=20)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--dims", default="40,40")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--source", choices=("swmr", "pva"), default="swmr", help="the detector stream: an SWMR file "
                    "(ptychopy simwrite) or an NTNDArray over pvAccess (ptychopy simioc --stream pva, loopback)")
    args = ap.parse_args()
    scan = f"./ptycho -size={args.size} -scanDims={args.dims} -photons=1e6 -seed=0"
    rec = f"-sqrtData=1 -algorithm={args.algorithm} -updateProbe=2 -phaseConstraint=0 -device=cpu"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "scan.h5"
        writer, source, env = _writer(args.source, data, scan, args.rate)
        live = subprocess.run([*PTYCHOPY, "run", f"{scan} {rec} {source} -liveStall=5 "
                               f"-liveFinish={args.finish} -jobID=live", "--out", tmp, "--quiet"],
                              capture_output=True, text=True, check=True, env=env)
        if args.source == "pva":
            writer.terminate()  # past its report: it lingers for late clients
        wrote = json.loads([x for x in writer.communicate()[0].splitlines() if x.startswith("{")][-1])
        info = live_line(live.stdout)
        epochs = info["live_iterations"] + info["finish_iterations"]
        t0 = time.perf_counter()
        subprocess.run([*PTYCHOPY, "run", f"{scan} {rec} -fp={data} -i={epochs} -jobID=batch", "--out", tmp,
                        "--quiet"], capture_output=True, text=True, check=True)
        batch_s = time.perf_counter() - t0
        live_obj = read_result(Path(tmp) / "live.h5").object
        batch_res = read_result(Path(tmp) / "batch.h5")
    truth = simulate_from_parameters(Parameters.from_cmdstr(scan)).object_truth
    region = _region(batch_res, truth.shape)
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "algorithm": args.algorithm,
        "source": args.source,
        "scan": scan, "writer": wrote, "live": info, "batch_epochs": epochs, "batch_process_s": round(batch_s, 2),
        "nrmse_live_vs_batch": round(object_nrmse(batch_res.object, live_obj, region), 4),
        "nrmse_live_vs_truth": round(object_nrmse(truth, live_obj, region), 4),
        "nrmse_batch_vs_truth": round(object_nrmse(truth, batch_res.object, region), 4),
    }
    print(json.dumps(out))
    return 0


def _writer(kind: str, data: Path, scan: str, rate: float) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    """Start the detector stream; (its process, the run's -liveSource/-fp flags, the run's environment). For pvAccess
    the batch run's file is written from the same simulation (same seed) the server streams."""
    if kind == "swmr":
        return (subprocess.Popen([*PTYCHOPY, "simwrite", str(data), scan, "--rate", str(rate)], stdout=subprocess.PIPE,
                                 text=True), f"-fp={data} -liveSource=swmr", dict(os.environ))
    from epics_bridge.simioc_pva import pva_client_env
    from reconstruction.io.writers import write_frames

    write_frames(data, simulate_from_parameters(Parameters.from_cmdstr(scan)).data.intensities)
    port = importlib.import_module("benchmarks.latency.procs").free_port_pair()  # (by name: mypy sees it twice)
    server = subprocess.Popen([*PTYCHOPY, "simioc", "--stream", "pva", "--pva-port", str(port), "--prefix", "bench:",
                               "--scan", scan, "--rate", str(rate), "--linger", "30"], stdout=subprocess.PIPE,
                              text=True)
    serving = json.loads(server.stdout.readline() if server.stdout else "{}")["serving"]
    return server, f"-liveSource={serving}", {**os.environ, **pva_client_env(port)}


def _region(result, shape) -> np.ndarray:
    """Where the probe lit the object (10 % of the peak illumination), from the result's probe and positions."""
    n = result.probe.shape[-1]
    p2 = (np.abs(result.probe) ** 2).sum(axis=0)
    illum = np.zeros(shape, dtype=np.float64)
    for r, c in np.floor(result.positions_px + 0.5).astype(int):
        illum[r:r + n, c:c + n] += p2
    return illuminated_region(illum)


if __name__ == "__main__":
    raise SystemExit(main())
