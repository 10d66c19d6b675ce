"""Step-mode sessions behind the paper's API (``epieinit`` / ``epiestep`` / ``epieresobj`` / ... / ``epiepost``).

One session per algorithm family (epie, dm, lsqml; the original's ``mls`` names share lsqml's). Every init
builds a fresh :class:`Parameters` from its own arguments only: nothing leaks from an earlier call (the
original kept a process-wide singleton).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reconstruction.driver import Reconstruction
from reconstruction.errors import SessionStateError
from reconstruction.multigpu import SplitReconstruction
from reconstruction.parameters import Parameters
from reconstruction.state import Progress, Result

log = logging.getLogger("ptychopy")


@dataclass
class Session:
    """A reconstruction driven one iteration at a time."""

    family: str
    params: Parameters
    rec: Reconstruction | SplitReconstruction
    history: list[Progress] = field(default_factory=list)

    def step(self) -> Progress:
        try:
            progress = self.rec.step()
        except SessionStateError as exc:
            raise SessionStateError(f"{self.family}step(): {exc}. Call {self.family}post() to finish.") from None
        self.history.append(progress)
        save = self.params.output.save_every
        if save > 0 and progress.iteration % save == 0 and progress.iteration < self.rec.iterations:
            write_outputs(self.rec.result(), self.params, index=progress.iteration // save)
        return progress

    def object(self) -> np.ndarray:
        return self.rec.object()

    def probe_stacked(self) -> np.ndarray:
        """Probe modes stacked along axis 0, (modes * n, n) complex64: the original's layout."""
        p = self.rec.probe()
        return np.ascontiguousarray(p.reshape(-1, p.shape[-1]))

    def post(self) -> list[Path]:
        """Write the final outputs and release the device memory."""
        result = self.rec.result()
        self.rec.close()
        return write_outputs(result, self.params, index=0, with_hdf5=True)


_sessions: dict[str, Session] = {}


def start(family: str, params: Parameters, data_arrays: dict[str, Any] | None = None) -> Session:
    """Create the session of ``family`` (replacing an unfinished one, which is closed).

    ``data_arrays``: :class:`~reconstruction.scan_data.ScanData` fields when the data come from NumPy arrays.
    """
    old = _sessions.pop(family, None)
    if old is not None:
        log.warning("%sinit(): an earlier %s session was never posted; discarding it", family, family)
        old.rec.close()
    from reconstruction.multigpu import from_parameters
    from reconstruction.scan_data import ScanData

    data = None if data_arrays is None else ScanData(**data_arrays)
    rec = from_parameters(params, data=data)  # split over -gpus when it lists several
    session = Session(family, params, rec)
    _sessions[family] = session
    return session


def get(family: str, call: str) -> Session:
    """The live session of ``family``; a clear error if ``{family}init`` was not called or post() ended it."""
    session = _sessions.get(family)
    if session is None:
        raise SessionStateError(f"{call}() needs a running {family} session: call {family}init(cmdstr) first "
                                f"(or start a new one after {family}post())")
    return session


def finish(family: str, call: str) -> list[Path]:
    session = get(family, call)
    try:
        return session.post()
    finally:
        _sessions.pop(family, None)


def write_outputs(result: Result, params: Parameters, index: int = 0, with_hdf5: bool = False) -> list[Path]:
    """The original's ``<outputDir>/<jobID>_object_<index>.csv`` and ``_probes_<index>.csv`` (or .bin), plus the
    HDF5 result file ``<outputDir>/<jobID>.h5`` when ``with_hdf5``."""
    from reconstruction.io.original_csv import write_original_outputs
    from reconstruction.safe_paths import path_inside

    out_dir = Path(params.output.output_dir)
    job = params.experiment.job_id or "ptychopy"
    paths = list(write_original_outputs(result.object, result.probe, out_dir, job, index=index,
                                        binary=params.output.binary_output))
    if with_hdf5:
        from reconstruction.io import write_result

        paths.append(Path(write_result(result, path_inside(out_dir, job, ".h5", what="-jobID"), overwrite=True)))
    return paths
