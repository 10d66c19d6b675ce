from pathlib import Path

import pytest

from reconstruction.errors import InputDataError
from reconstruction.io.patterns import file_for_index, file_list, format_pattern, frame_location, is_multi_file


def test_hash_becomes_printf_conversion():
    assert format_pattern("/d/scan152_data_#06d.h5", 1) == "/d/scan152_data_000001.h5"
    assert format_pattern("scan_#d.h5", 42) == "scan_42.h5"
    assert format_pattern("a_#4i.h5", 7) == "a_   7.h5"


def test_only_first_hash_is_a_conversion_and_percent_is_literal():
    assert format_pattern("x%_#03d_#.h5", 5) == "x%_005_#.h5"


def test_pattern_without_conversion_after_hash_is_an_input_error():
    with pytest.raises(InputDataError, match="integer conversion"):
        format_pattern("scan_#s.h5", 1)


def test_frame_location_follows_k_div_dpf_plus_fs():
    assert frame_location(0, 51, 1) == (1, 0)
    assert frame_location(50, 51, 1) == (1, 50)
    assert frame_location(51, 51, 1) == (2, 0)
    assert frame_location(7, 3, 10) == (12, 1)


def test_file_for_index_single_file_holds_every_frame():
    assert file_for_index("all.h5", 17, 5, 3) == (Path("all.h5"), 17)
    assert not is_multi_file("all.h5")


def test_file_list_covers_partial_last_file():
    files = file_list("f_#02d.h5", n_frames=7, frames_per_file=3, first_file_index=2)
    assert [f.name for f in files] == ["f_02.h5", "f_03.h5", "f_04.h5"]


def test_numbered_series_finds_padded_pattern_first_index_and_stops_at_a_gap(tmp_path):
    from reconstruction.io.patterns import find_numbered_series

    for k in (3, 4, 5, 6, 9):
        (tmp_path / f"s_{k:06d}.h5").touch()
    (tmp_path / "s_7.h5").touch()  # not zero padded: another series
    series = find_numbered_series(tmp_path / "s_000005.h5")
    assert series is not None
    assert (series.pattern, series.first_index, series.files) == (str(tmp_path / "s_#06d.h5"), 3, 4)
    assert find_numbered_series(tmp_path / "s_000009.h5") is None  # alone after the gap
    assert find_numbered_series(tmp_path / "master.h5") is None


def test_numbered_series_without_padding_uses_hash_d(tmp_path):
    from reconstruction.io.patterns import find_numbered_series, format_pattern

    for k in (8, 9, 10, 11):
        (tmp_path / f"scan{k}.tif").touch()
    series = find_numbered_series(tmp_path / "scan10.tif")
    assert series is not None and (series.first_index, series.files) == (8, 4)
    assert format_pattern(series.pattern, 11) == str(tmp_path / "scan11.tif")
