"""A live run on the GPU takes its frames in through the pinned staging buffer (reconstruction/live/upload.py):
the device slots hold exactly the amplitudes a CPU live run holds, with the staging buffer smaller than a batch
(several copies per batch) and -fftShiftData (shifted out of the scratch buffer). Skipped where CuPy has no CUDA
device."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction.backend import gpu_available
from reconstruction.live import ENDED, FrameBatch, PlannedScan
from reconstruction.live import upload as upload_module
from reconstruction.live.run import StreamingRun
from reconstruction.parameters import Parameters
from reconstruction.positions import positions_m_from_parameters
from reconstruction.simulate import simulate_from_parameters

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="CuPy sees no CUDA device")]

SCAN = "./ptycho -size=64 -scanDims=10,10 -step=150e-9,150e-9 -beamSize=800e-9 -photons=1e6 -seed=0"


class Batches:
    name = "test batches"

    def __init__(self, batches: list[FrameBatch], planned: PlannedScan):
        self.batches, self.planned = list(batches), planned

    def poll(self) -> FrameBatch | None:
        return self.batches.pop(0) if self.batches else None

    def state(self) -> str:
        return ENDED if not self.batches else "acquiring"

    def close(self) -> None:
        pass


def _slots(device: str, shift: bool) -> tuple[np.ndarray, StreamingRun]:
    params = Parameters.from_cmdstr(f"{SCAN} -sqrtData=1 -algorithm=LSQML -device={device} -liveFinish=1"
                                    f"{' -fftShiftData=1' if shift else ''}")
    sim = simulate_from_parameters(Parameters.from_cmdstr(SCAN))
    frames = sim.data.intensities
    order = np.random.default_rng(0).permutation(frames.shape[0])  # out of order, batches of 30
    batches = [FrameBatch(frames[order[j:j + 30]], order[j:j + 30]) for j in range(0, len(order), 30)]
    run = StreamingRun(params, Batches(batches, PlannedScan(positions_m_from_parameters(params), None, "test")))
    run.run()
    assert run.rec is not None and run.summary.received == frames.shape[0]
    return run.rec.backend.asnumpy(run._amplitudes), run


@pytest.mark.parametrize("shift", [False, True])
def test_gpu_slots_hold_the_amplitudes_the_cpu_run_holds_with_several_copies_per_batch(monkeypatch, shift):
    monkeypatch.setattr(upload_module, "STAGING_BYTES", 7 * 64 * 64 * 4)  # 7 frames: 5 copies per batch of 30
    gpu, gpu_run = _slots("gpu", shift)
    cpu, _ = _slots("cpu", shift)
    assert gpu_run._upload is not None and gpu_run._upload.gpu and gpu_run._upload.capacity == 7
    assert gpu_run._upload.copies >= 100 // 7
    np.testing.assert_allclose(gpu, cpu, rtol=1e-6, atol=1e-6)  # scan order in both, after the run
    assert gpu.max() > 0


def test_a_live_scan_whose_planned_frames_do_not_fit_the_device_is_refused_before_allocating():
    from reconstruction.errors import DeviceMemoryError

    params = Parameters.from_cmdstr(f"{SCAN} -sqrtData=1 -algorithm=LSQML -device=gpu")
    sim = simulate_from_parameters(Parameters.from_cmdstr(SCAN))
    step_m = 150e-9
    grid = np.stack(np.meshgrid(np.arange(5000), np.arange(2000), indexing="ij"), axis=-1).reshape(-1, 2) * step_m
    planned = PlannedScan(grid.astype(np.float64), None, "test: 10,000,000 points of 64^2 (164 GB of amplitudes)")
    run = StreamingRun(params, Batches([FrameBatch(sim.data.intensities[:10], np.arange(10))], planned))
    free_before = run_free_bytes()
    with pytest.raises(DeviceMemoryError, match="10000000 planned frames of 64x64 px need"):
        run.run()
    assert run.rec is None and run_free_bytes() >= free_before - 2**28  # nothing N-sized was allocated


def run_free_bytes() -> int:
    from reconstruction.backend import get_backend

    return int(get_backend("gpu").free_memory_bytes() or 0)
