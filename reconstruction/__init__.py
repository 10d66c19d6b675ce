"""ptychopy's reconstruction core: parameters, physics, engines and the driver, on NumPy or CuPy.

The public face (``docs/architecture.md``)::

    from reconstruction import Parameters, Reconstruction, reconstruct, simulate
    result = reconstruct(intensities, positions_px, algorithm="LSQML", iterations=50)

Pure: no Django, no network. Importing this package imports NumPy only; CuPy is imported when a run asks for the
GPU (``backend.get_backend``).
"""

from .driver import Reconstruction, reconstruct
from .errors import (
    DeviceMemoryError,
    DeviceUnavailableError,
    InputDataError,
    ReconstructionError,
    SessionStateError,
)
from .parameters import ParameterError, Parameters
from .run_plan import RunPlan, plan_run
from .simulate import simulate
from .state import Progress, Result

__all__ = [
    "DeviceMemoryError", "DeviceUnavailableError", "InputDataError", "ParameterError", "Parameters",
    "Progress", "Reconstruction", "ReconstructionError", "Result", "RunPlan", "SessionStateError", "plan_run",
    "reconstruct", "simulate",
]
