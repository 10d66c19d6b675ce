"""Beamline data in and results out: scan files, preprocessing, positions, result files, exports, MDA.

See ``docs/io.md``. Public entry points:

- :func:`read_scan` (files -> :class:`~reconstruction.scan_data.ScanData`), :func:`read_frame` (one pattern),
- :class:`Scan`, :func:`inspect`, :func:`check_complete` (describe / peek at / wait for a scan),
- :func:`write_result`, :func:`read_result` (one HDF5 file per run), :class:`ResultWriteError`,
- :mod:`.export` (TIFF/PNG/CSV), :mod:`.original_csv`, :mod:`.mda`, :func:`write_scan_files`.
"""

from .errors import OutputWriteError, ResultWriteError
from .mda import apply_mda, mda_parameters
from .reader import read_frame, read_scan
from .results import read_result, write_result
from .scan import Scan, ScanInspection, check_complete, inspect
from .writers import write_positions_csv, write_scan_files

__all__ = [
    "OutputWriteError", "ResultWriteError", "Scan", "ScanInspection", "apply_mda", "check_complete",
    "inspect", "mda_parameters", "read_frame", "read_result", "read_scan", "write_positions_csv", "write_result",
    "write_scan_files",
]
