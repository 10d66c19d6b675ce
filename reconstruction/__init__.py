"""ptychopy's reconstruction core: parameters, physics, engines and the driver, on NumPy or CuPy.

Pure: no Django, no network. See ``docs/architecture.md``.
"""

from .errors import DeviceMemoryError, DeviceUnavailableError, InputDataError, SessionStateError
from .parameters import ParameterError, Parameters
from .state import Progress, Result

__all__ = [
    "DeviceMemoryError", "DeviceUnavailableError", "InputDataError", "ParameterError", "Parameters",
    "Progress", "Result", "SessionStateError",
]
