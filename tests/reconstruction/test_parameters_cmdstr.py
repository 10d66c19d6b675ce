"""The one parameter object: original command-string syntax, validation and error messages."""

import pytest

from reconstruction.parameters import ParameterError, Parameters, leaf_specs, param_table
from reconstruction.parameters.cmdstr import tokenize

ORIGINAL_FLAGS = (
    "jobID algorithm fp fs hdf5path dpf beamSize probeGuess objectGuess size qxy nxy scanDims spiralScan "
    "flipScanAxis mirror1stScanAxis mirror2ndScanAxis step probeModes lambda dx_d z i T save jitterRadius "
    "threshold rotate90 sqrtData fftShiftData bitDepth beamstopMask blind binaryOutput simulate overlap "
    "shareFrequency phaseConstraint updateProbe updateModes updateVis lf PPS RMS threads angles drift delta_p"
).split()

LISTING1 = ("./ptycho -jobID=sim512 -beamSize=110e-9 -scanDims=30,30 -step=50e-9,50e-9 -i=100 -size=512\n"
            "-lambda=2.4796837508399954e-10 -dx_d=172e-6 -z=1 -simulate=1 -blind=0")


def test_every_original_flag_is_recognised():
    known = {s.flag.lower() for s in leaf_specs()}
    missing = [f for f in ORIGINAL_FLAGS if f.lower() not in known]
    assert missing == []


def test_listing1_command_string_parses_to_typed_values():
    p = Parameters.from_cmdstr(LISTING1)
    assert p.experiment.job_id == "sim512"
    assert p.experiment.beam_size_m == pytest.approx(110e-9)
    assert p.experiment.scan_dims == (30, 30)
    assert p.experiment.step_m == (pytest.approx(50e-9), pytest.approx(50e-9))
    assert p.reconstruction.iterations == 100
    assert p.preprocessing.size_px == 512
    assert p.data.simulate is True
    assert p.output.blind is False
    # dx_s = lambda z / (size dx_d)
    assert p.pixel_size_m == pytest.approx(2.4796837508399954e-10 / (512 * 172e-6))


def test_first_token_is_the_program_name_and_is_skipped():
    assert tokenize("./ptycho -i=5") == ["-i=5"]
    assert tokenize("-i=5 -size=64") == ["-i=5", "-size=64"]  # no program name: nothing is lost


def test_names_are_case_insensitive_dashes_optional_and_bare_flags_mean_one():
    p = Parameters.from_cmdstr("prog --SIZE=64 jobID=abc -sqrtData -fftshiftdata")
    assert p.preprocessing.size_px == 64
    assert p.experiment.job_id == "abc"
    assert p.preprocessing.sqrt_data and p.preprocessing.fft_shift_data


def test_a_flag_given_twice_is_refused_naming_it():
    for cmd in ("p -i=5 -i=7", "p -i=5 -iter=7", "p -SIZE=64 --size=64"):
        with pytest.raises(ParameterError, match=r"given twice.*give it once") as err:
            Parameters.from_cmdstr(cmd)
        assert len(err.value.problems) == 1 and err.value.problems[0].flag in {"i", "size"}


def test_tokenizer_reads_quotes_like_a_posix_shell():
    import shlex

    for text in ("p -a='x y' -b=\"q \\\" r\" -c=a\\ b", "p 'a'\"b\"c \\x", "p -a=\"\\n\"", "  "):
        assert tokenize(text) == shlex.split(text)[1:] or tokenize(text) == shlex.split(text)
    assert tokenize("p -a='unclosed b") == ["-a='unclosed", "b"]  # an unclosed quote: white space only


def test_max_size_command_string_parses_fast_and_a_larger_one_is_refused_at_once():
    import time

    from reconstruction.parameters.cmdstr import MAX_CMDSTR_CHARS

    worst = {
        "one long value": "./ptycho -fp=" + "a" * MAX_CMDSTR_CHARS,
        "many flags": "./ptycho " + " ".join(f"-zz{i}=1" for i in range(MAX_CMDSTR_CHARS // 8)),
        "one quoted value": "./ptycho -fp='" + "a " * MAX_CMDSTR_CHARS + "'",
        "escapes": "./ptycho -fp=\"" + "\\a" * MAX_CMDSTR_CHARS + "\"",
    }
    for what, text in worst.items():
        text = text[:MAX_CMDSTR_CHARS]
        start = time.process_time()
        try:
            Parameters.from_cmdstr(text)
        except ParameterError as exc:
            assert len(str(exc)) < 5000, f"{what}: a {len(str(exc))}-character message"
        assert time.process_time() - start < 0.5, f"{what}: {time.process_time() - start:.2f} s of CPU"
    start = time.process_time()
    with pytest.raises(ParameterError, match="65,536"):
        Parameters.from_cmdstr("./ptycho -jobID=" + "a" * 2 * 2**20)
    assert time.process_time() - start < 0.1


@pytest.mark.parametrize("job_id", ["../../outside/pwn", "/tmp/pwn", ".hidden", "a\x00b", "x" * 101, "a/b"])
def test_a_job_id_that_is_not_a_plain_file_name_is_refused_naming_the_flag(job_id):
    with pytest.raises(ParameterError, match=r"-jobID=.*plain file name") as err:
        Parameters().replace({"experiment.job_id": job_id})
    assert err.value.problems[0].flag == "jobID"
    assert Parameters.from_cmdstr("./ptycho -jobID=scan_152.v2-b").experiment.job_id == "scan_152.v2-b"


def test_pairs_and_single_values_follow_the_original():
    p = Parameters.from_cmdstr("p -scanDims=40 -step=1e-7 -qxy=276,616")
    assert p.experiment.scan_dims == (40, 1)  # the original: -scanDims=N means (N, 1)
    assert p.experiment.step_m == (1e-7, 1e-7)  # a float for both (the original parsed it as an int: a bug)
    assert p.preprocessing.crop_center_px == (276, 616)


def test_threshold_does_not_set_the_time_limit():
    # the original read -T by prefix, so a later -threshold set it; we match whole names
    p = Parameters.from_cmdstr("p -T=30 -threshold=2")
    assert p.reconstruction.time_limit_s == 30
    assert p.preprocessing.threshold == 2


def test_mls_is_an_alias_of_lsqml():
    assert Parameters.from_cmdstr("p -algorithm=MLs").reconstruction.algorithm == "LSQML"
    assert Parameters.from_cmdstr("p -algorithm=dm").reconstruction.algorithm == "DM"


def test_unknown_flag_names_the_flag_and_suggests_the_closest():
    with pytest.raises(ParameterError) as err:
        Parameters.from_cmdstr("p -sise=64")
    msg = str(err.value)
    assert "-sise" in msg and "did you mean -size?" in msg


def test_malformed_value_names_flag_value_and_expectation():
    with pytest.raises(ParameterError) as err:
        Parameters.from_cmdstr("p -size=big")
    assert "-size=big" in str(err.value) and "expected an integer" in str(err.value)
    assert err.value.problems[0].path == "preprocessing.size_px"


def test_out_of_range_value_is_rejected_with_the_range():
    with pytest.raises(ParameterError) as err:
        Parameters.from_cmdstr("p -size=4 -lambda=-1")
    msgs = [p.message for p in err.value.problems]
    assert any("-size=4" in m and "16 to 8192" in m for m in msgs)
    assert any("-lambda=-1" in m for m in msgs)


def test_live_stall_is_at_most_an_hour_and_a_longer_wait_names_the_flag_and_the_bound():
    """-liveStall took up to 10^6 s: a streaming job waiting for a file that never appears held a worker for days."""
    assert Parameters.from_cmdstr("p -liveStall=3600").data.live_stall_s == 3600.0
    with pytest.raises(ParameterError) as err:
        Parameters.from_cmdstr("p -liveStall=86400")
    assert "-liveStall=86400" in str(err.value) and "0.1 to 3600 (s)" in str(err.value)


def test_all_problems_are_reported_together():
    with pytest.raises(ParameterError) as err:
        Parameters.from_cmdstr("p -sise=1 -i=x -probeModes=0")
    assert len(err.value.problems) == 3


def test_command_string_and_dict_round_trip():
    p = Parameters.from_cmdstr("p -jobID=rt -size=128 -step=3e-8,4e-8 -algorithm=DM -sqrtData -probeModes=3")
    assert Parameters.from_cmdstr(p.to_cmdstr()) == p
    assert Parameters.from_dict(p.to_dict()) == p
    assert Parameters.from_json(p.to_json()) == p


def test_parameters_are_frozen_and_each_parse_is_independent():
    a = Parameters.from_cmdstr("p -sqrtData -lf=pos.csv -size=64")
    b = Parameters.from_cmdstr("p -size=64")
    assert not b.preprocessing.sqrt_data and b.experiment.positions_file == ""
    with pytest.raises(AttributeError):
        a.preprocessing.size_px = 3  # type: ignore[misc]


def test_defaults_follow_the_originals_command_string_parser():
    p = Parameters()
    assert p.preprocessing.size_px == 256
    assert p.experiment.scan_dims == (12, 12)
    assert p.experiment.wavelength_m == 2.48e-10
    assert p.experiment.detector_distance_m == 1.0
    assert p.reconstruction.position_search_from == 5
    assert p.reconstruction.iterations == 100


def test_param_table_lists_unit_default_and_hint_for_every_leaf():
    rows = param_table()
    assert len(rows) == len(leaf_specs()) + 1  # and the input-only -energy
    step = next(r for r in rows if r["flag"] == "step")
    assert step["unit"] == "m" and step["hint"] and step["default"] == "4e-08,4e-08"
