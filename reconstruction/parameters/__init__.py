"""The one typed parameter object (see ``model``), its field metadata (``spec``) and command strings."""

from .cmdstr import format_cmdstr, parse_cmdstr
from .model import (
    ALGORITHMS,
    GROUP_TITLES,
    GROUPS,
    ParameterError,
    Parameters,
    Problem,
    input_specs,
    leaf_specs,
    param_table,
    spec_for_flag,
    spec_for_path,
    wavelength_from_energy_m,
)
from .spec import FieldSpec

__all__ = [
    "ALGORITHMS", "GROUP_TITLES", "GROUPS", "FieldSpec", "ParameterError", "Parameters", "Problem",
    "format_cmdstr", "input_specs", "leaf_specs", "param_table", "parse_cmdstr", "spec_for_flag", "spec_for_path",
    "wavelength_from_energy_m",
]
