"""``ptychopy run -liveSource=swmr`` against a real writer process (``ptychopy simwrite``): a normal scan, an abort,
a stall, and frames out of order with a duplicate. Each test runs the writer and the reconstruction as two
processes on one SWMR file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ptychopy.cli import main
from reconstruction.io import read_result
from reconstruction.metrics import illuminated_region, object_nrmse
from reconstruction.parameters import Parameters
from reconstruction.positions import positions_px_from_parameters

SCAN = "./ptycho -size=32 -scanDims=12,12 -step=150e-9,150e-9 -beamSize=500e-9 -photons=1e6 -seed=0"
REC = "-sqrtData=1 -updateProbe=2 -phaseConstraint=0 -device=cpu"
N = 144


def _live(tmp_path: Path, writer_args: list[str], run_flags: str = "", timeout_s: float = 60
          ) -> tuple[dict, dict, subprocess.CompletedProcess[str]]:
    """Start the writer, run the live reconstruction to its end; (writer report, live summary, the run)."""
    data = tmp_path / "scan.h5"
    writer = subprocess.Popen([sys.executable, "-m", "ptychopy", "simwrite", str(data), SCAN, *writer_args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run = subprocess.run([sys.executable, "-m", "ptychopy", "run",
                              f"{SCAN} {REC} -fp={data} -liveSource=swmr -jobID=live {run_flags}",
                              "--out", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=timeout_s)
        out, err = writer.communicate(timeout=timeout_s)
    finally:
        writer.kill()
    assert writer.returncode == 0, err
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("live: "))[6:])
    return json.loads(out.strip().splitlines()[-1]), summary, run


def _region(result) -> np.ndarray:
    n = result.probe.shape[-1]
    p2 = (np.abs(result.probe) ** 2).sum(axis=0)
    illum = np.zeros(result.object.shape)
    for r, c in np.floor(result.positions_px + 0.5).astype(int):
        illum[r:r + n, c:c + n] += p2
    return illuminated_region(illum)


def test_a_full_scan_is_reconstructed_with_no_frame_dropped_and_matches_a_batch_run(tmp_path):
    wrote, live, _run = _live(tmp_path, ["--rate", "200"], "-liveFinish=30")
    assert wrote["frames"] == N and wrote["how"] == "ended"
    assert live["outcome"] == "ended" and not live["partial"]
    assert live["frames_received"] == N and live["frames_dropped"] == 0 and live["live_iterations"] >= 1
    res = read_result(tmp_path / "live.h5")
    assert res.stopped_early is None or res.stopped_early == ""
    assert res.inputs["live"]["frames_received"] == N
    expected = positions_px_from_parameters(Parameters.from_cmdstr(SCAN))
    np.testing.assert_allclose(res.positions_px, np.floor(expected + 0.5))
    epochs = live["live_iterations"] + live["finish_iterations"]
    assert main(["run", f"{SCAN} {REC} -fp={tmp_path / 'scan.h5'} -i={epochs} -jobID=batch", "--out",
                 str(tmp_path), "--quiet"]) == 0
    batch = read_result(tmp_path / "batch.h5")
    assert batch.object.shape == res.object.shape
    nrmse = object_nrmse(batch.object, res.object, _region(batch))
    print(f"live vs batch NRMSE {nrmse:.4f} after {epochs} epochs")
    assert nrmse < 0.05


def test_an_aborted_scan_keeps_its_partial_result_labelled_partial(tmp_path):
    wrote, live, run = _live(tmp_path, ["--rate", "400", "--abort-after", "60"], "-liveFinish=2")
    assert wrote["how"] == "aborted" and wrote["frames"] == 60
    assert live["outcome"] == "aborted" and live["partial"] and live["frames_received"] == 60
    res = read_result(tmp_path / "live.h5")
    assert res.stopped_early == f"partial: scan aborted after 60 of {N} frames"
    assert res.positions_px.shape == (60, 2) and np.isfinite(res.object).all()
    assert "kept the partial result" in run.stdout


def test_a_writer_that_stops_ends_the_stream_as_stalled_after_the_stall_time(tmp_path):
    wrote, live, _run = _live(tmp_path, ["--rate", "400", "--stop-after", "50"], "-liveFinish=1 -liveStall=1")
    assert wrote["how"] == "stopped" and wrote["frames"] == 50
    assert live["outcome"] == "stalled" and live["frames_received"] == 50
    assert read_result(tmp_path / "live.h5").stopped_early == f"partial: scan stalled after 50 of {N} frames"


def test_frames_out_of_order_are_placed_at_their_scan_point_and_a_duplicate_is_dropped(tmp_path):
    wrote, live, _run = _live(tmp_path, ["--rate", "300", "--shuffle", "16", "--duplicate", "7"], "-liveFinish=2")
    assert wrote["frames"] == N + 1
    assert live["outcome"] == "ended" and not live["partial"]
    assert live["frames_received"] == N and live["duplicates_ignored"] == [7] and live["out_of_order"] > 0
    res = read_result(tmp_path / "live.h5")
    expected = positions_px_from_parameters(Parameters.from_cmdstr(SCAN))
    np.testing.assert_allclose(res.positions_px, np.floor(expected + 0.5))  # scan point order, as a batch run


def test_dm_is_refused_for_a_live_source_naming_the_flags(tmp_path, capsys):
    assert main(["run", f"{SCAN} {REC} -algorithm=DM -fp={tmp_path / 'x.h5'} -liveSource=swmr",
                 "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "-liveSource=swmr with -algorithm=DM" in err and "use ePIE or LSQML" in err
