"""The paper's Python API, kept compatible with the original ptychopy (kyuepublic/ptychopy).

Whole mode: ``epie(**kw)``, ``dm(**kw)``, ``lsqml(**kw)`` (``mls``) run to the end and write results;
``epiecmdstr(cmdstr)`` (and ``dm``/``lsqml``/``mls``) return the object. NumPy variants ``epienp``, ``dmnp``,
``mlsnp`` (``lsqmlnp``) take ``diffractionNP`` amplitudes in FFT order and ``positionNP`` in metres.
Step mode: ``epieinit(cmdstr)``, ``epiestep()``, ``epieresobj()``, ``epieresprobe()``, ``epiepost()``, and the
same for ``dm*``, ``lsqml*`` and ``mls*``; ``epienpinit(**kw)``.

Differences from the original (``docs/api.md``): each call is independent (no settings leak between calls);
defaults are the parameter object's (the original's keyword defaults differed from its command-string ones);
``*resprobe()`` returns the modes stacked along axis 0, ``(modes*size, size)``, as the original did; stepping
past the planned iterations, or calling step/res after post, raises ``SessionStateError`` instead of crashing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reconstruction.errors import InputDataError
from reconstruction.parameters import Parameters
from reconstruction.parameters.cmdstr import parse_cmdstr
from reconstruction.parameters.model import ParameterError, Problem, spec_for_flag, unknown_flag_problem
from reconstruction.positions import metres_to_pixels

from . import session

FAMILY_ALGORITHM = {"epie": "ePIE", "dm": "DM", "lsqml": "LSQML"}

# Keyword names of the original's API that are not command-string flags, and the flags they feed.
_PAIR_KWARGS = {"qx": ("qxy", 0), "qy": ("qxy", 1), "nx": ("nxy", 0), "ny": ("nxy", 1),
                "scanDimsx": ("scanDims", 0), "scanDimsy": ("scanDims", 1),
                "stepx": ("step", 0), "stepy": ("step", 1)}
_RENAMED_KWARGS = {"lambd": "lambda", "iter": "i"}
_ARRAY_KWARGS = ("diffractionNP", "positionNP", "objectNP", "probeNP")


def params_from_kwargs(algorithm: str, kwargs: dict[str, Any]) -> Parameters:
    """A :class:`Parameters` from the original's keyword arguments (set A) plus any command-string flag."""
    flags: list[tuple[str, Any]] = []
    pairs: dict[str, list[Any]] = {}
    problems: list[Problem] = []
    for key, value in kwargs.items():
        if key in _ARRAY_KWARGS:
            continue
        if key in _PAIR_KWARGS:
            flag, slot = _PAIR_KWARGS[key]
            pairs.setdefault(flag, [None, None])[slot] = value
            continue
        flag = _RENAMED_KWARGS.get(key, key)
        if spec_for_flag(flag) is None:
            problems.append(unknown_flag_problem(key, value))
            continue
        if flag.lower() == "algorithm":
            continue  # the function name decides
        flags.append((flag, value))
    if problems:
        raise ParameterError(problems)
    base = Parameters()
    for flag, (a, b) in pairs.items():
        spec = spec_for_flag(flag)
        assert spec is not None
        default = base.get(spec.path)
        flags.append((flag, (default[0] if a is None else a, default[1] if b is None else b)))
    flags.append(("algorithm", algorithm))
    return Parameters.from_flags(flags)


def params_from_cmdstr(algorithm: str, cmdstr: str) -> Parameters:
    """Parse ``cmdstr``; the calling function's algorithm wins over any ``-algorithm`` in the string (it is set
    before validation, so flags that depend on the algorithm, e.g. ``-refinePositions`` for MLs, are checked
    against it)."""
    return Parameters.from_flags([*parse_cmdstr(cmdstr), ("algorithm", algorithm)])


def arrays_from_kwargs(params: Parameters, kwargs: dict[str, Any]) -> dict[str, Any]:
    """ScanData fields from ``diffractionNP`` (N, n, n) amplitudes in FFT order and optional ``positionNP``
    (N, 2) metres, ``objectNP`` and ``probeNP`` complex arrays."""
    diff = kwargs.get("diffractionNP")
    if diff is None:
        raise InputDataError("diffractionNP is required: a (N, size, size) array of amplitudes in FFT order")
    amp = np.asarray(diff, dtype=np.float64)
    n = params.preprocessing.size_px
    if amp.ndim != 3 or amp.shape[1:] != (n, n):
        raise InputDataError(f"diffractionNP has shape {amp.shape}: expected (N, {n}, {n}) with size={n}")
    if not np.all(np.isfinite(amp)):
        raise InputDataError("diffractionNP contains NaN or infinite values")
    pixel = params.pixel_size_m
    if kwargs.get("positionNP") is not None:
        pos_m = np.asarray(kwargs["positionNP"], dtype=np.float64)
        if pos_m.shape != (amp.shape[0], 2):
            raise InputDataError(f"positionNP has shape {pos_m.shape}: expected ({amp.shape[0]}, 2) metres")
        positions = metres_to_pixels(pos_m, pixel)
    else:
        from reconstruction.positions import positions_px_from_parameters

        positions = positions_px_from_parameters(params)
        if len(positions) != amp.shape[0]:
            raise InputDataError(f"diffractionNP holds {amp.shape[0]} patterns but scanDims "
                                 f"{params.experiment.scan_dims} gives {len(positions)} positions")
    probe = kwargs.get("probeNP")
    obj = kwargs.get("objectNP")
    return dict(
        intensities=(amp * amp).astype(np.float32), positions_px=positions, pixel_size_m=pixel,
        probe_guess=None if probe is None else np.asarray(probe, dtype=np.complex64),
        object_guess=None if obj is None else np.asarray(obj, dtype=np.complex64),
        source={"numpy": True},
    )


# -- whole mode --------------------------------------------------------------------------------------------
def _run_whole(family: str, params: Parameters, arrays: dict[str, Any] | None = None) -> session.Session:
    s = session.start(family, params, arrays)
    print(f"Running algorithm {params.reconstruction.algorithm}.")
    while not s.rec.done:
        p = s.step()
        print(f"{params.reconstruction.algorithm} Iteration [{p.iteration:05d}] --- step time= {p.iteration_s:.4f}s "
              f"--- error= {p.error:.6g}")
    return s


def _whole_kwargs(family: str, kwargs: dict[str, Any]) -> bool:
    params = params_from_kwargs(FAMILY_ALGORITHM[family], kwargs)
    _run_whole(family, params)
    session.finish(family, family)
    return True


def _whole_np(family: str, kwargs: dict[str, Any]) -> bool:
    params = params_from_kwargs(FAMILY_ALGORITHM[family], kwargs)
    _run_whole(family, params, arrays_from_kwargs(params, kwargs))
    session.finish(family, family + "np")
    return True


def _whole_cmdstr(family: str, cmdstr: str) -> np.ndarray:
    params = params_from_cmdstr(FAMILY_ALGORITHM[family], cmdstr)
    s = _run_whole(family, params)
    obj = s.object()
    session.finish(family, family + "cmdstr")
    return obj


def epie(**kwargs: Any) -> bool:
    """Whole-mode ePIE from the original's keyword arguments; writes results; returns True."""
    return _whole_kwargs("epie", kwargs)


def dm(**kwargs: Any) -> bool:
    """Whole-mode DM from keyword arguments; writes results; returns True."""
    return _whole_kwargs("dm", kwargs)


def lsqml(**kwargs: Any) -> bool:
    """Whole-mode LSQML from keyword arguments; writes results; returns True."""
    return _whole_kwargs("lsqml", kwargs)


def epienp(**kwargs: Any) -> bool:
    """Whole-mode ePIE on ``diffractionNP`` (N, n, n) amplitudes in FFT order; returns True."""
    return _whole_np("epie", kwargs)


def dmnp(**kwargs: Any) -> bool:
    """Whole-mode DM on NumPy amplitudes; returns True."""
    return _whole_np("dm", kwargs)


def lsqmlnp(**kwargs: Any) -> bool:
    """Whole-mode LSQML on NumPy amplitudes; returns True."""
    return _whole_np("lsqml", kwargs)


def epiecmdstr(cmdstr: str) -> np.ndarray:
    """Whole-mode ePIE from a command string; writes results; returns the object (H, W) complex64."""
    return _whole_cmdstr("epie", cmdstr)


def dmcmdstr(cmdstr: str) -> np.ndarray:
    """Whole-mode DM from a command string; returns the object."""
    return _whole_cmdstr("dm", cmdstr)


def lsqmlcmdstr(cmdstr: str) -> np.ndarray:
    """Whole-mode LSQML from a command string; returns the object."""
    return _whole_cmdstr("lsqml", cmdstr)


# -- step mode ---------------------------------------------------------------------------------------------
def _init(family: str, cmdstr: str) -> bool:
    session.start(family, params_from_cmdstr(FAMILY_ALGORITHM[family], cmdstr))
    return True


def _step(family: str) -> bool:
    session.get(family, family + "step").step()
    return True


def _resobj(family: str) -> np.ndarray:
    return session.get(family, family + "resobj").object()


def _resprobe(family: str) -> np.ndarray:
    return session.get(family, family + "resprobe").probe_stacked()


def _post(family: str) -> bool:
    session.finish(family, family + "post")
    return True


def epieinit(cmdstr: str) -> bool:
    """Step mode: parse ``cmdstr``, load or simulate the data, initialise object and probe."""
    return _init("epie", cmdstr)


def epienpinit(**kwargs: Any) -> bool:
    """Step mode on NumPy amplitudes (``diffractionNP``), ePIE."""
    params = params_from_kwargs("ePIE", kwargs)
    session.start("epie", params, data_arrays=arrays_from_kwargs(params, kwargs))
    return True


def epiestep(*_ignored: Any) -> bool:
    """Run one ePIE iteration (epoch)."""
    return _step("epie")


def epieresobj() -> np.ndarray:
    """Current object, (H, W) complex64 (a host copy)."""
    return _resobj("epie")


def epieresprobe() -> np.ndarray:
    """Current probe modes stacked along axis 0, (modes*size, size) complex64."""
    return _resprobe("epie")


def epiepost() -> bool:
    """Write ``<outputDir>/<jobID>_object_0.csv``, ``_probes_0.csv`` and ``<jobID>.h5``; end the session."""
    return _post("epie")


def dminit(cmdstr: str) -> bool:
    """Step mode for DM."""
    return _init("dm", cmdstr)


def dmstep(*_ignored: Any) -> bool:
    return _step("dm")


def dmresobj() -> np.ndarray:
    return _resobj("dm")


def dmresprobe() -> np.ndarray:
    return _resprobe("dm")


def dmpost() -> bool:
    return _post("dm")


def lsqmlinit(cmdstr: str) -> bool:
    """Step mode for LSQML (the original's MLs)."""
    return _init("lsqml", cmdstr)


def lsqmlstep(*_ignored: Any) -> bool:
    return _step("lsqml")


def lsqmlresobj() -> np.ndarray:
    return _resobj("lsqml")


def lsqmlresprobe() -> np.ndarray:
    return _resprobe("lsqml")


def lsqmlpost() -> bool:
    return _post("lsqml")


def helloworld(a1: Any, a2: Any, a3: Any) -> None:
    """The original's debug function: prints a1[2], a2[3][1], a3[1][0][2]."""
    a1, a2, a3 = (np.asarray(a, dtype=np.float64) for a in (a1, a2, a3))
    print(a1[2], a2[3][1], a3[1][0][2])


def result_files(job_id: str, output_dir: str | Path = "data") -> list[Path]:
    """The files ``*post()`` writes for ``job_id``."""
    out = Path(output_dir)
    return [out / f"{job_id}_object_0.csv", out / f"{job_id}_probes_0.csv", out / f"{job_id}.h5"]


# The original's MLs names.
mls = lsqml
mlsnp = lsqmlnp
mlscmdstr = lsqmlcmdstr
mlsinit = lsqmlinit
mlsstep = lsqmlstep
mlsresobj = lsqmlresobj
mlsresprobe = lsqmlresprobe
mlspost = lsqmlpost
