"""One pattern of a simulated scan (a finished job's diffraction click): the full simulation's, bit for bit, noise
included; noise-free it is computed alone, noisy it is simulated once and read back from the cache file; two
requests at once simulate once (a file lock), a request waits a bounded time, a crashed writer leaves no part file."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from reconstruction import InputDataError, Parameters
from reconstruction.loading import load_pattern
from reconstruction.simulate import simulate_from_parameters
from reconstruction.simulated_patterns import MAX_RESIMULATED_PIXELS, PatternsBeingPrepared, simulated_pattern

CMD = "./ptycho -simulate=1 -i=1 -device=cpu"
SCAN = " -size=32 -scanDims=6,6"


def test_a_noisy_patterns_are_the_full_simulations_and_the_second_comes_from_the_cache_file(tmp_path) -> None:
    params = Parameters.from_cmdstr(CMD + SCAN + " -photons=1e5 -seed=3")
    full = simulate_from_parameters(params).data.intensities
    mean = simulate_from_parameters(params.replace({"data.photons": 0})).data.intensities * (1e5 / 1e6)
    assert np.array_equal(full, np.round(full)) and np.abs(full - mean).max() > 10  # Poisson counts, not the means
    for k in (0, 17, 35):
        got = load_pattern(params, k, cache_dir=tmp_path)
        assert got.dtype == np.float32 and got.shape == (32, 32)
        np.testing.assert_array_equal(got, full[k])
    (cached,) = tmp_path.glob("sim_patterns_*.npy")
    stored = np.load(cached)
    assert stored.dtype == np.uint16 and stored.shape == (36, 32, 32)  # every count fits 16 bits here
    np.testing.assert_array_equal(stored, full)
    # the next request reads the file: changed values there come back (no new simulation)
    np.save(cached, (stored + 7).astype(np.uint16))
    np.testing.assert_array_equal(simulated_pattern(params, 17, tmp_path), full[17] + 7)
    # another seed is another scan: not answered from that file
    other = Parameters.from_cmdstr(CMD + SCAN + " -photons=1e5 -seed=4")
    np.testing.assert_array_equal(load_pattern(other, 17, cache_dir=tmp_path),
                                  simulate_from_parameters(other).data.intensities[17])
    assert len(list(tmp_path.glob("sim_patterns_*.npy"))) == 2


def test_a_noise_free_pattern_is_computed_alone_bit_for_bit_from_the_cached_object(tmp_path) -> None:
    params = Parameters.from_cmdstr(CMD + " -size=32 -scanDims=7,5 -photons=0")
    sim = simulate_from_parameters(params)
    for k in range(35):
        np.testing.assert_array_equal(load_pattern(params, k, cache_dir=tmp_path), sim.data.intensities[k])
    (cached,) = tmp_path.glob("sim_object_*.npy")
    np.testing.assert_array_equal(np.load(cached), sim.object_truth)
    assert not list(tmp_path.glob("sim_patterns_*"))  # only the object is kept
    # without a cache folder, the same numbers
    np.testing.assert_array_equal(load_pattern(params, 9), sim.data.intensities[9])
    # half sets count the half's positions: the second half's 4th is the scan's 7th
    half = params.replace({"data.half_set": 2})
    np.testing.assert_array_equal(load_pattern(half, 3, cache_dir=tmp_path), sim.data.intensities[7])


def test_a_noisy_scan_too_large_to_simulate_again_is_refused_and_a_noise_free_one_is_not(tmp_path) -> None:
    big = Parameters.from_cmdstr("./ptycho -simulate=1 -size=256 -scanDims=33,32 -i=1 -photons=1e6 -device=cpu")
    assert big.n_positions * 256**2 > MAX_RESIMULATED_PIXELS
    with pytest.raises(InputDataError, match="too large to simulate again"):
        load_pattern(big, 5, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())
    small = Parameters.from_cmdstr(CMD + " -size=16 -scanDims=40,40 -photons=0")  # a window alone needs no limit
    assert load_pattern(small, 1599).shape == (16, 16)


def test_a_cache_folder_that_cannot_be_written_still_gives_the_pattern(tmp_path) -> None:
    params = Parameters.from_cmdstr(CMD + SCAN + " -photons=1e5")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder would be")
    np.testing.assert_array_equal(load_pattern(params, 4, cache_dir=blocked),
                                  simulate_from_parameters(params).data.intensities[4])
    # a truncated cache file is simulated again and replaced
    load_pattern(params, 4, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("sim_patterns_*.npy")
    cached.write_bytes(cached.read_bytes()[:200])
    np.testing.assert_array_equal(load_pattern(params, 5, cache_dir=tmp_path),
                                  simulate_from_parameters(params).data.intensities[5])
    assert np.load(cached).shape == (36, 32, 32)


def slow_simulate(monkeypatch, hold_s: float) -> list[int]:
    """``reconstruction.simulate.simulate`` made to take ``hold_s`` longer (the real simulation, then a sleep), so two
    requests overlap; the list it returns counts the simulations run."""
    sim = importlib.import_module("reconstruction.simulate")  # (the package exports a function of that name)

    real, calls = sim.simulate, []

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        out = real(*args, **kwargs)
        time.sleep(hold_s)
        return out

    monkeypatch.setattr(sim, "simulate", slow)
    return calls


def test_two_simultaneous_requests_simulate_a_noisy_scan_once_the_second_reading_the_firsts_file(
        tmp_path, monkeypatch) -> None:
    params = Parameters.from_cmdstr(CMD + SCAN + " -photons=1e5 -seed=5")
    full = simulate_from_parameters(params).data.intensities
    calls = slow_simulate(monkeypatch, 0.5)
    start = threading.Barrier(2)
    got: dict[int, np.ndarray] = {}

    def click(k: int) -> None:
        start.wait()
        got[k] = simulated_pattern(params, k, tmp_path, wait_s=30)

    threads = [threading.Thread(target=click, args=(k,)) for k in (3, 29)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(calls) == 1  # the second waited for the first's file instead of simulating the scan again
    for k in (3, 29):
        np.testing.assert_array_equal(got[k], full[k])
    assert sorted(p.name.split(".", 1)[1] for p in tmp_path.iterdir()) == ["npy", "npy.lock"]


def test_a_request_that_would_wait_past_its_bound_is_refused_then_served_from_the_file(tmp_path, monkeypatch) -> None:
    params = Parameters.from_cmdstr(CMD + SCAN + " -photons=1e5 -seed=6")
    full = simulate_from_parameters(params).data.intensities
    calls = slow_simulate(monkeypatch, 1.5)
    first = threading.Thread(target=simulated_pattern, args=(params, 0, tmp_path))
    first.start()
    while not calls:  # the first request holds the lock and simulates
        time.sleep(0.01)
    with pytest.raises(PatternsBeingPrepared, match="try again in a few seconds"):
        simulated_pattern(params, 1, tmp_path, wait_s=0.2)
    assert first.is_alive()  # answered after its own bound, while the first still simulates (1.5 s)
    first.join(30)
    np.testing.assert_array_equal(simulated_pattern(params, 1, tmp_path, wait_s=0.2), full[1])
    assert len(calls) == 1


#: a process that makes the cache file and is killed half way through writing it (SIGKILL: no clean-up runs)
CRASHING_WRITER = """
import os, signal, sys
import numpy as np
from reconstruction import Parameters
from reconstruction.simulated_patterns import simulated_pattern

def half_then_die(f, values):  # the file's start (magic, header, half the values), then death
    whole = values.tobytes()
    f.write(b"\\x93NUMPY" + whole[: len(whole) // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

np.save = half_then_die
simulated_pattern(Parameters.from_cmdstr(sys.argv[1]), 0, sys.argv[2])
"""


def test_a_writer_killed_mid_file_leaves_nothing_under_the_files_name_and_the_next_request_remakes_it(tmp_path) -> None:
    cmd = CMD + SCAN + " -photons=1e5 -seed=7"
    child = subprocess.run([sys.executable, "-c", CRASHING_WRITER, cmd, str(tmp_path)], timeout=120,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.returncode == -signal.SIGKILL
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if n.endswith(".npy")] and [n for n in names if n.endswith(".tmp")], names
    params = Parameters.from_cmdstr(cmd)
    np.testing.assert_array_equal(simulated_pattern(params, 11, tmp_path, wait_s=5),
                                  simulate_from_parameters(params).data.intensities[11])
    assert not list(tmp_path.glob("*.tmp"))  # the dead writer's part removed by the next maker
    assert np.load(next(tmp_path.glob("*.npy"))).shape == (36, 32, 32)
