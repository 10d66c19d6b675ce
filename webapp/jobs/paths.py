"""Keep user-supplied file paths inside the configured data roots (``PTYCHOPY_DATA_ROOTS``).

A path is resolved (symlinks included) before it is compared, so neither ``../`` nor a symlink can leave a
root. Relative paths are taken relative to the first root. The parameters that reach a worker carry the
resolved absolute paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from reconstruction import ParameterError, Parameters
from reconstruction.parameters import Problem, spec_for_path

#: Parameter paths that name files (the data pattern's folder is checked; its file name may hold '#06d').
FILE_PATHS = (
    "data.file_pattern",
    "experiment.positions_file",
    "reconstruction.probe_guess",
    "reconstruction.object_guess",
    "preprocessing.bad_pixel_mask",
)
PATTERN_PATHS = ("data.file_pattern",)


class PathNotAllowed(ValueError):
    """A path that resolves outside every data root."""


def data_roots() -> list[Path]:
    """The configured data folders, then the uploads folder, each fully resolved."""
    roots = [Path(os.path.realpath(Path(r).expanduser())) for r in settings.PTYCHOPY_DATA_ROOTS]
    uploads = getattr(settings, "PTYCHOPY_UPLOADS_DIR", None)
    if uploads:
        roots.append(Path(os.path.realpath(Path(uploads).expanduser())))
    return roots


def confine(raw: str, roots: Iterable[Path] | None = None, *, pattern: bool = False) -> str:
    """``raw`` resolved to an absolute path inside one of ``roots``; raises :class:`PathNotAllowed`."""
    roots = list(roots if roots is not None else data_roots())
    if not roots:
        raise PathNotAllowed("no data folder is configured (PTYCHOPY_DATA_ROOTS)")
    text = raw.strip()
    if "\x00" in text:
        raise PathNotAllowed("the path contains a NUL character")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    if pattern:
        if path.name in ("", ".", ".."):
            raise PathNotAllowed(f"{raw!r} does not name a file pattern")
        resolved = Path(os.path.realpath(path.parent)) / path.name
        checked = resolved.parent
    else:
        resolved = Path(os.path.realpath(path))
        checked = resolved
    for root in roots:
        if checked == root or checked.is_relative_to(root):
            return str(resolved)
    allowed = ", ".join(str(r) for r in roots)
    raise PathNotAllowed(f"{raw!r} is outside the data folders ({allowed})")


def confine_parameters(params: Parameters) -> Parameters:
    """``params`` with every file path resolved inside the data roots; ParameterError names each bad one."""
    roots = data_roots()
    problems: list[Problem] = []
    changes: dict[str, str] = {}
    for path in FILE_PATHS:
        value = params.get(path)
        if not value:
            continue
        spec = spec_for_path(path)
        try:
            changes[path] = confine(value, roots, pattern=path in PATTERN_PATHS)
        except PathNotAllowed as exc:
            problems.append(Problem(path, spec.flag, value, f"-{spec.flag}: {exc}"))
    if problems:
        raise ParameterError(problems)
    return params.replace(changes) if changes else params
