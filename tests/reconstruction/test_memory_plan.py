"""The memory plan (resident / streamed / refused) and the GPU memory cap parameter (issue 10).

Pure arithmetic on sizes: runs on the CPU. The streamed engines themselves are checked in tests/gpu.
"""

import numpy as np
import pytest

from reconstruction import DeviceMemoryError, InputDataError, Parameters
from reconstruction.backend import Backend
from reconstruction.driver import Reconstruction
from reconstruction.memory_plan import (
    EPIE_STEPS_PER_GRAPH,
    GIB,
    RING_SLOTS,
    estimate_memory_bytes,
    plan_memory,
    streamed_memory_bytes,
)
from reconstruction.parameters import ParameterError

BIG = dict(n_positions=250_000, size_px=256, object_shape=(2791, 64231))
H100_FREE = 79 * GIB


def test_a_run_that_fits_is_resident():
    plan = plan_memory(900, 256, (600, 600), algorithm="ePIE", fast_gpu=True, free_bytes=H100_FREE)
    assert plan.mode == "resident" and plan.chunk_positions == 0 and plan.streamed_bytes is None
    assert plan.needed_bytes == plan.resident_bytes == estimate_memory_bytes(900, 256, (600, 600), algorithm="ePIE",
                                                                             fast_gpu=True)


def test_the_cpu_path_ignores_the_cap():
    plan = plan_memory(**BIG, algorithm="DM", cap_bytes=1 * GIB, free_bytes=None)
    assert plan.mode == "resident" and plan.limit_bytes is None


@pytest.mark.parametrize("algorithm", ["ePIE", "LSQML"])
def test_250k_patterns_of_256_stream_under_a_24_gib_cap(algorithm):
    plan = plan_memory(**BIG, algorithm=algorithm, fast_gpu=True, cap_bytes=24 * GIB, free_bytes=H100_FREE)
    assert plan.mode == "streamed"
    assert plan.limit_bytes == 24 * GIB
    assert plan.resident_bytes > 24 * GIB >= plan.streamed_bytes == plan.needed_bytes
    # the ring replaces the 61 GiB of intensities: two slots of one chunk
    ring = RING_SLOTS * plan.chunk_positions * 256 * 256 * 4
    assert plan.streamed_bytes < plan.resident_bytes - 250_000 * 256 * 256 * 4 + 2 * ring
    expected_chunk = EPIE_STEPS_PER_GRAPH if algorithm == "ePIE" else -(-250_000 // 40)  # LSQML: one mini-batch
    assert plan.chunk_positions == expected_chunk


def test_epie_chunk_shrinks_to_the_largest_that_fits_under_a_tight_cap():
    sizes = dict(n_positions=225, size_px=64, object_shape=(200, 200))
    for chunk in (1, 40, 111):
        cap = streamed_memory_bytes(**sizes, algorithm="ePIE", chunk_positions=chunk)
        plan = plan_memory(**sizes, algorithm="ePIE", fast_gpu=True, cap_bytes=cap, free_bytes=H100_FREE)
        assert (plan.mode, plan.chunk_positions, plan.streamed_bytes) == ("streamed", chunk, cap)
        plan = plan_memory(**sizes, algorithm="ePIE", fast_gpu=True, cap_bytes=cap - 1, free_bytes=H100_FREE)
        assert plan.chunk_positions == chunk - 1 if chunk > 1 else plan.mode == "refuse"


def test_lsqml_streams_whole_mini_batches_or_refuses():
    sizes = dict(n_positions=1000, size_px=64, object_shape=(300, 300))
    need = streamed_memory_bytes(**sizes, algorithm="LSQML", chunk_positions=50, batch_size=50)
    ok = plan_memory(**sizes, algorithm="LSQML", batch_size=50, fast_gpu=True, cap_bytes=need, free_bytes=H100_FREE)
    assert (ok.mode, ok.chunk_positions) == ("streamed", 50)
    short = plan_memory(**sizes, algorithm="LSQML", batch_size=50, fast_gpu=True, cap_bytes=need - 1,
                        free_bytes=H100_FREE)
    assert short.mode == "refuse" and short.needed_bytes == need


def test_dm_is_refused_with_both_needs_and_what_to_do():
    plan = plan_memory(**BIG, algorithm="DM", fast_gpu=True, cap_bytes=24 * GIB, free_bytes=H100_FREE)
    assert plan.mode == "refuse" and plan.streamed_bytes is None
    assert f"{plan.resident_bytes / GIB:.2f} GiB" in plan.message
    assert "cap of 24.00 GiB" in plan.message
    assert "DM keeps every exit wave" in plan.message and "use ePIE or LSQML" in plan.message


def test_a_per_frame_mask_or_the_reference_engine_does_not_stream():
    masked = plan_memory(**BIG, algorithm="ePIE", fast_gpu=True, per_frame_mask=True, cap_bytes=24 * GIB,
                         free_bytes=H100_FREE)
    assert masked.mode == "refuse" and "per-frame (N, n, n) valid mask is not streamed" in masked.message
    reference = plan_memory(**BIG, algorithm="LSQML", fast_gpu=False, cap_bytes=24 * GIB, free_bytes=H100_FREE)
    assert reference.mode == "refuse" and "only the fast GPU engines stream" in reference.message


def test_a_run_too_large_even_streamed_says_both_needs():
    plan = plan_memory(**BIG, algorithm="LSQML", fast_gpu=True, cap_bytes=2 * GIB, free_bytes=H100_FREE)
    assert plan.mode == "refuse"
    assert plan.streamed_bytes is not None and plan.streamed_bytes > 2 * GIB
    assert f"{plan.resident_bytes / GIB:.2f} GiB" in plan.message
    assert f"{plan.streamed_bytes / GIB:.2f} GiB streaming" in plan.message
    assert "raise the cap (-memCapGiB)" in plan.message
    assert plan.needed_bytes == plan.streamed_bytes


def test_the_limit_is_the_smaller_of_cap_and_free_memory():
    plan = plan_memory(**BIG, algorithm="ePIE", fast_gpu=True, cap_bytes=500 * GIB, free_bytes=20 * GIB)
    assert plan.limit_bytes == 20 * GIB and plan.mode == "streamed"
    free_only = plan_memory(**BIG, algorithm="ePIE", fast_gpu=True, cap_bytes=0, free_bytes=20 * GIB)
    assert free_only.limit_bytes == 20 * GIB
    with pytest.raises(ValueError, match="cap_bytes=-1"):
        plan_memory(**BIG, algorithm="ePIE", cap_bytes=-1, free_bytes=20 * GIB)


def test_cap_parameter_round_trips_through_the_command_string():
    p = Parameters.from_cmdstr("./ptycho -size=64 -algorithm=LSQML -memCapGiB=24")
    assert p.reconstruction.memory_cap_gib == 24.0
    assert "-memCapGiB=24" in p.to_cmdstr()
    assert Parameters.from_cmdstr(p.to_cmdstr()) == p
    assert Parameters.from_dict(p.to_dict()) == p
    assert Parameters().reconstruction.memory_cap_gib == 0.0


@pytest.mark.parametrize("value, why", [("-1", "out of range"), ("abc", "expected a number"),
                                        ("nan", "not a finite number")])
def test_bad_cap_values_name_the_flag(value, why):
    with pytest.raises(ParameterError, match=rf"-memCapGiB={value}.*{why}"):
        Parameters.from_cmdstr(f"./ptycho -memCapGiB={value}")


def test_the_driver_refuses_before_reading_the_data(tiny_scan, monkeypatch):
    """A run that does not fit raises DeviceMemoryError from the sizes alone: the data (here with a NaN, which
    the value checks would report) are not read first."""
    monkeypatch.setattr(Backend, "free_memory_bytes", lambda self: 64 * 2**10)
    i = tiny_scan.data.intensities.copy()
    i[3, 1, 1] = np.nan
    with pytest.raises(DeviceMemoryError, match=r"this DM run needs .* GiB .*more than the cap of") as info:
        Reconstruction(i, tiny_scan.data.positions_px, algorithm="DM", device="cpu", memory_cap_bytes=2**10)
    assert info.value.needed_bytes > info.value.available_bytes == 2**10
    monkeypatch.undo()
    with pytest.raises(InputDataError, match="NaN"):  # on the CPU the cap does not apply
        Reconstruction(i, tiny_scan.data.positions_px, algorithm="DM", device="cpu", memory_cap_bytes=2**10)


def test_the_cap_reaches_the_driver_from_the_parameters(tiny_scan):
    p = Parameters.from_cmdstr("./ptycho -size=32 -memCapGiB=1.5 -device=cpu -i=1")
    rec = Reconstruction.from_parameters(p, data=tiny_scan.data)
    assert rec.memory_cap_bytes == int(1.5 * GIB) and rec.memory_plan.mode == "resident" and not rec.streamed
    with pytest.raises(ValueError, match="memory_cap_bytes=-5"):
        Reconstruction(tiny_scan.data.intensities, tiny_scan.data.positions_px, memory_cap_bytes=-5)


def test_position_refinement_adds_its_mini_batch_arrays_and_is_refused_rather_than_streamed():
    plain = estimate_memory_bytes(900, 256, (600, 600), algorithm="LSQML")
    refining = estimate_memory_bytes(900, 256, (600, 600), algorithm="LSQML", per_position_fits=True)
    batch, wave = 23, 256 * 256 * 8  # N/40 positions a mini-batch, one complex64 exit wave each
    assert refining - plain >= 6 * batch * wave
    plan = plan_memory(**BIG, algorithm="LSQML", cap_bytes=24 * GIB, free_bytes=H100_FREE, per_position_fits=True)
    assert plan.mode == "refuse" and plan.needed_bytes > 24 * GIB


def test_the_fast_dm_with_moved_windows_and_refinement_counts_its_moved_probes_and_epoch_end_arrays():
    """The fast DM holds every window's moved probe (gpu/window_fits.py) and ends each refining epoch on CuPy with
    phi before and after the moves, their difference and two sets of object windows (before: counted as a plain run,
    so a run that fits on paper ran out of device memory at its first refining epoch)."""
    n, m = 256, 1
    wave = m * n * n * 8
    plain = estimate_memory_bytes(900, n, (600, 600), algorithm="DM", fast_gpu=True)
    windows = estimate_memory_bytes(900, n, (600, 600), algorithm="DM", fast_gpu=True, subpixel_windows=True)
    refining = estimate_memory_bytes(900, n, (600, 600), algorithm="DM", fast_gpu=True, subpixel_windows=True,
                                     per_position_fits=True)
    assert windows - plain >= 900 * wave
    assert refining - windows >= 900 * (3 * wave + 2 * n * n * 8)
