"""The original's complex CSV/BIN files: ``<jobID>_object_<r>.csv``, ``<jobID>_probes_<r>.csv`` and the
``-probeGuess``/``-objectGuess`` files.

Elements are written like ``0.123457-0.002j`` (6 significant digits) separated by ``", "``, one array row
per line, so ``numpy.genfromtxt(f, delimiter=",", dtype=complex)`` reads them back. Probe modes are stacked
along axis 0: ``(modes * n, n)``. ``binary=True`` writes raw complex64 (row-major, no header) as ``.bin``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

import numpy as np

from ..errors import InputDataError
from ..safe_paths import path_inside
from .errors import OutputWriteError


def format_complex(z: complex) -> str:
    """``0.123457-0.002j``: real part then signed imaginary part, 6 significant digits each."""
    return f"{z.real:g}{z.imag:+g}j"


def format_rows(array: np.ndarray) -> str:
    """The CSV text of a 2-D complex array."""
    arr = np.asarray(array, dtype=np.complex128)
    return "".join(", ".join(format_complex(complex(z)) for z in row) + "\n" for row in arr)


def _write(path: Path, array: np.ndarray, binary: bool) -> Path:
    """Write under a temporary name beside ``path`` and rename: a failed write (a full disk) leaves neither a
    partial file nor the temporary one, and an older file of that name stays as it was."""
    data = np.ascontiguousarray(array, dtype=np.complex64).tobytes() if binary else format_rows(array).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOSPC:
                raise OutputWriteError(f"disk full writing {path}: {len(data)} bytes needed; nothing was written",
                                       path) from exc
            raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}", path) from exc
        raise
    return path


def write_original_outputs(object: np.ndarray, probe: np.ndarray, output_dir: Path | str, job_id: str,
                           index: int = 0, binary: bool = False) -> list[Path]:
    """Write ``<dir>/<jobID>_object_<index>.csv`` ``(H, W)`` and ``_probes_<index>.csv`` ``(modes*n, n)``.

    ``probe`` is ``(n, n)`` or ``(modes, n, n)``. The directory is created (the original failed silently
    without it); a directory or file that cannot be written raises :class:`OutputWriteError`. ``job_id`` must
    be a plain file name and the files must stay inside the directory (symlinks resolved), else
    :class:`~reconstruction.safe_paths.UnsafePathError` is raised before anything is written.
    Returns [object file, probe file].
    """
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create output directory {out}: {exc.strerror or exc}", out) from exc
    obj = np.asarray(object)
    if obj.ndim != 2:
        raise ValueError(f"object has shape {obj.shape}; expected (H, W)")
    pr = np.asarray(probe)
    if pr.ndim == 3:
        pr = pr.reshape(pr.shape[0] * pr.shape[1], pr.shape[2])
    elif pr.ndim != 2:
        raise ValueError(f"probe has shape {pr.shape}; expected (n, n) or (modes, n, n)")
    ext = ".bin" if binary else ".csv"
    object_path = path_inside(out, job_id, f"_object_{index}{ext}", what="-jobID")
    probe_path = path_inside(out, job_id, f"_probes_{index}{ext}", what="-jobID")
    return [_write(object_path, obj, binary), _write(probe_path, pr, binary)]


def parse_complex(token: str) -> complex:
    """One element: ``(a+bj)``, ``a+bj``, ``a+bi``, ``a``, ``bj``, numpy's ``(a+-bj)``; ValueError else."""
    t = token.strip().strip("()").replace(" ", "").replace("+-", "-").replace("-+", "-")
    if t[-1:] in ("i", "I") and not t.lower().endswith("inf"):
        t = t[:-1] + "j"
    if not t:
        raise ValueError("empty element")
    return complex(t)


def read_complex_csv(path: Path | str) -> np.ndarray:
    """A complex 2-D array from a ``-probeGuess``/``-objectGuess`` or result CSV -> complex64 ``(rows, cols)``.

    Elements are separated by commas (or white space when a line has no comma) and may be written as
    ``(a+bj)``, ``a+bj``, ``a+bi`` or plain reals, with or without exponents (``np.savetxt`` format included).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputDataError(f"file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"file {path}: cannot be read: {exc}") from exc
    rows: list[list[complex]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tokens = [t for t in (line.split(",") if "," in line else line.split()) if t.strip()]
        try:
            rows.append([parse_complex(t) for t in tokens])
        except ValueError as exc:
            raise InputDataError(f"file {path}, line {number}: not a complex number ({exc}): {line[:80]!r}"
                                 ) from None
        if len(rows[-1]) != len(rows[0]):
            raise InputDataError(f"file {path}, line {number}: {len(rows[-1])} values, but line 1 has "
                                 f"{len(rows[0])}")
    if not rows:
        raise InputDataError(f"file {path}: holds no numbers")
    return np.asarray(rows, dtype=np.complex64)
