"""One pattern of a simulated scan (a finished job's diffraction click): the full simulation's, bit for bit, noise
included; noise-free it is computed alone, noisy it is simulated once and read back from the cache file."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction import InputDataError, Parameters
from reconstruction.loading import load_pattern
from reconstruction.simulate import simulate_from_parameters
from reconstruction.simulated_patterns import MAX_RESIMULATED_PIXELS, simulated_pattern

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
