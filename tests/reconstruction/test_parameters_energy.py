"""-energy (keV): converted once to the wavelength by the parameter tree, refused with a -lambda that disagrees."""

import pytest

from reconstruction.parameters import ParameterError, Parameters, param_table, wavelength_from_energy_m


def test_energy_becomes_the_wavelength_from_h_c():
    # 12.398 keV is 1 angstrom; 8.8 keV is 1.4089 angstrom
    assert wavelength_from_energy_m(12.39841984) == pytest.approx(1e-10, rel=1e-9)
    p = Parameters.from_cmdstr("./ptycho -energy=8.8 -size=64")
    assert p.experiment.wavelength_m == pytest.approx(1.40891e-10, rel=1e-5)
    assert p.pixel_size_m == pytest.approx(p.experiment.wavelength_m * 1.0 / (64 * 172e-6))


def test_energy_is_an_input_not_a_stored_leaf():
    p = Parameters.from_cmdstr("./ptycho -energy=8.8")
    assert "energy_kev" not in p.to_dict()["experiment"]
    assert "-energy" not in p.to_cmdstr() and "-lambda=1.40891" in p.to_cmdstr()
    assert Parameters.from_cmdstr(p.to_cmdstr()) == p
    assert Parameters.from_dict({"experiment": {"energy_kev": 8.8}}) == p
    assert Parameters.from_dict({"experiment.energy_kev": "8.8"}) == p


def test_energy_with_an_agreeing_lambda_is_accepted_and_a_disagreeing_one_refused():
    assert Parameters.from_cmdstr("./ptycho -lambda=1.409e-10 -energy=8.8").experiment.wavelength_m == \
        pytest.approx(1.40891e-10, rel=1e-5)
    with pytest.raises(ParameterError) as err:
        Parameters.from_cmdstr("./ptycho -energy=8.8 -lambda=2.48e-10")
    (problem,) = err.value.problems
    assert problem.flag == "energy" and problem.path == "experiment.energy_kev"
    assert "-energy=8.8 keV" in problem.message and "-lambda=2.48e-10" in problem.message


@pytest.mark.parametrize("value,words", [("hot", "expected a number"), ("0", "out of range"),
                                         ("5000", "out of range")])
def test_bad_energies_are_named(value, words):
    with pytest.raises(ParameterError) as err:
        Parameters.from_cmdstr(f"./ptycho -energy={value}")
    assert err.value.problems[0].flag == "energy" and words in str(err.value)


def test_ptychopy_params_lists_energy_after_the_wavelength():
    flags = [row["flag"] for row in param_table()]
    assert flags.index("energy") == flags.index("lambda") + 1
