"""Keep user-supplied file paths inside the configured data roots (``PTYCHOPY_DATA_ROOTS``).

A path is resolved (symlinks included) before it is compared, so neither ``../`` nor a symlink can leave a
root; a file named directly is stored as its resolved path, so what the worker opens is what was checked. A
multi-file pattern (``scan_#06d.h5``) keeps its name, and every existing file it matches that is a symlink is
resolved and checked too. Relative paths are taken relative to the first root. :func:`check_submission` also
refuses, at submit, a job that names no data or a file that does not exist (as far as this server can see).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import h5py
from django.conf import settings

from reconstruction import ParameterError, Parameters
from reconstruction.io.masks import beamstop_path, split_dataset
from reconstruction.io.patterns import format_pattern, is_multi_file
from reconstruction.parameters import Problem, spec_for_path
from reconstruction.safe_paths import is_inside

from .hdf5_references import references

#: Parameter paths that name files (the data pattern's folder is checked; its file name may hold '#06d').
FILE_PATHS = (
    "data.file_pattern",
    "experiment.positions_file",
    "reconstruction.probe_guess",
    "reconstruction.object_guess",
    "preprocessing.bad_pixel_mask",
)
PATTERN_PATHS = ("data.file_pattern",)
#: Paths whose value may end in ``::/dataset`` (an HDF5 dataset inside the file).
DATASET_PATHS = ("preprocessing.bad_pixel_mask", "reconstruction.probe_guess", "reconstruction.object_guess",
                 "experiment.positions_file")


def _in_data_file(path: str, value: str) -> bool:
    """``-lf=::/dataset``: positions inside the scan's own first data file (confined with ``-fp``)."""
    return path == "experiment.positions_file" and value.startswith("::")


class PathNotAllowed(ValueError):
    """A path that resolves outside every data root."""


def data_roots() -> list[Path]:
    """The configured data folders, then the uploads folder, each fully resolved."""
    roots = [Path(os.path.realpath(Path(r).expanduser())) for r in settings.PTYCHOPY_DATA_ROOTS]
    uploads = getattr(settings, "PTYCHOPY_UPLOADS_DIR", None)
    if uploads:
        roots.append(Path(os.path.realpath(Path(uploads).expanduser())))
    return roots


def _inside_any(path: Path, roots: list[Path]) -> bool:
    return any(is_inside(path, root) for root in roots)


def _outside(raw: str, roots: list[Path], detail: str = "") -> PathNotAllowed:
    allowed = ", ".join(str(r) for r in roots)
    return PathNotAllowed(f"{raw!r}{detail} is outside the data folders ({allowed})")


MAX_LINK_DEPTH = 4  # files an HDF5 external-link chain may cross


def confine(raw: str, roots: Iterable[Path] | None = None, *, pattern: bool = False) -> str:
    """``raw`` resolved to an absolute path inside one of ``roots``; raises :class:`PathNotAllowed`, also for an
    HDF5 file whose external links lead outside them (:func:`check_external_links`).

    With ``pattern`` and a '#' in the name, the folder is resolved and the name kept; each existing file of
    that folder the pattern matches must not be a symlink that leads outside.
    """
    roots = list(roots if roots is not None else data_roots())
    if not roots:
        raise PathNotAllowed("no data folder is configured (PTYCHOPY_DATA_ROOTS)")
    text = raw.strip()
    if "\x00" in text:
        raise PathNotAllowed("the path contains a NUL character")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    if pattern and is_multi_file(path.name):
        if path.name in ("", ".", ".."):
            raise PathNotAllowed(f"{raw!r} does not name a file pattern")
        folder = Path(os.path.realpath(path.parent))
        if not _inside_any(folder, roots):
            raise _outside(raw, roots)
        escaped = _links_leaving(folder, path.name, roots)
        if escaped:
            raise _outside(raw, roots, f" (its file {escaped} is a symlink to {os.path.realpath(escaped)})")
        return str(folder / path.name)
    resolved = Path(os.path.realpath(path))
    if not _inside_any(resolved, roots):
        detail = f" (a symlink to {resolved})" if resolved != Path(os.path.abspath(path)) else ""
        raise _outside(raw, roots, detail)
    check_external_links(resolved, roots)
    return str(resolved)


def check_external_links(path: Path, roots: list[Path], depth: int = 0, seen: set[Path] | None = None) -> None:
    """Raise :class:`PathNotAllowed` naming the first way ``path`` (or a file it reads, up to ``MAX_LINK_DEPTH``
    files deep) reads a file outside ``roots`` (:mod:`webapp.scans.hdf5_references`): an external link or a virtual
    dataset's source that is not an HDF5 file inside ``roots``, or a dataset stored as raw bytes in a file that is
    not a regular file inside them; nothing for a file that is absent or not HDF5. h5py and the readers follow all
    three, so without this check a file inside a data folder could bring in any file of the server (the secret
    key's bytes as a dataset's values). HDF5 looks for a relative link or virtual source beside the file, then in
    the working folder: one missing beside it is refused; an absolute one inside the roots may dangle (a result
    file's links to raw files that moved away), and HDF5 then opens its name beside the file, which is checked like
    a relative one. A relative raw-storage file is looked for in the working folder only: refused."""
    seen = set() if seen is None else seen
    if path in seen or not path.is_file() or not h5py.is_hdf5(path):
        return
    seen.add(path)
    try:
        found = references(path)
    except OSError:
        return  # unreadable: the reader reports it, naming the file
    folders = ", ".join(map(str, roots))
    for ref in found:
        where = ref.describe(path)
        if depth >= MAX_LINK_DEPTH:
            raise PathNotAllowed(f"{where} is more than {MAX_LINK_DEPTH} files deep")
        target = Path(ref.target)
        if ref.kind == "raw" and not target.is_absolute():
            raise PathNotAllowed(f"{where}: a relative name, which HDF5 would look for in the server's working "
                                 f"folder; only absolute names inside the data folders ({folders}) are read")
        if ref.kind == "virtual" and "%" in ref.target:
            raise PathNotAllowed(f"{where}: a source file name pattern (%), which is not followed")
        resolved = Path(os.path.realpath(target if target.is_absolute() else path.parent / target))
        if not _inside_any(resolved, roots):
            raise PathNotAllowed(f"{where} leads outside the data folders ({folders})")
        if not resolved.exists() and target.is_absolute() and ref.kind != "raw":
            # dangling inside the roots (e.g. a result's raw file moved away): HDF5 then opens the same name beside
            # the file, which must pass as a relative target would
            beside = path.parent / target.name
            if not os.path.lexists(beside):
                continue  # nothing to read
            resolved = Path(os.path.realpath(beside))
            where = f"{where} (missing, so HDF5 reads {str(beside)!r})"
            if not _inside_any(resolved, roots):
                raise PathNotAllowed(f"{where} leads outside the data folders ({folders})")
        if not resolved.exists():
            raise PathNotAllowed(f"{where} leads to no file beside it (HDF5 would look for it in the server's "
                                 "working folder)" if ref.kind != "raw" else f"{where}: no such file")
        if not resolved.is_file():  # a FIFO or a device would block or never end a read
            raise PathNotAllowed(f"{where}, which is not a regular file")
        if ref.kind == "raw":
            continue
        if not h5py.is_hdf5(resolved):
            raise PathNotAllowed(f"{where} leads to a file that is not HDF5")
        check_external_links(resolved, roots, depth + 1, seen)


def _pattern_regex(name: str) -> re.Pattern[str]:
    """Matches the file names a '#' pattern can expand to (the conversion becomes digits and padding)."""
    head, _, tail = name.partition("#")
    rest = re.sub(r"^[-+ 0#]*\d*(?:\.\d+)?[diu]", "", tail, count=1)
    return re.compile(re.escape(head) + r"[-+ 0-9]*" + re.escape(rest))


def _links_leaving(folder: Path, name: str, roots: list[Path]) -> Path | None:
    """The first symlink in ``folder`` matching pattern ``name`` that resolves outside ``roots``, or None.

    One directory listing: only symlink entries are resolved, so a folder of 10^5 frames costs milliseconds.
    """
    regex = _pattern_regex(name)
    try:
        entries = os.scandir(folder)
    except OSError:
        return None  # no such folder yet: nothing in it can escape; the existence check reports it
    with entries:
        for entry in entries:
            if entry.is_symlink() and regex.fullmatch(entry.name) and not _inside_any(Path(entry.path), roots):
                return Path(entry.path)
    return None


def _confine_value(path: str, value: str, roots: list[Path]) -> str:
    if _in_data_file(path, value):
        return value
    if path in DATASET_PATHS:
        file, dataset = split_dataset(value)
        confined = confine(str(file), roots)
        return f"{confined}::{dataset}" if dataset else confined
    return confine(value, roots, pattern=path in PATTERN_PATHS)


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
            changes[path] = _confine_value(path, value, roots)
        except PathNotAllowed as exc:
            problems.append(Problem(path, spec.flag, value, f"-{spec.flag}: {exc}"))
    if params.preprocessing.beamstop_mask and params.data.file_pattern and not problems:
        mask = beamstop_path(changes.get("data.file_pattern", params.data.file_pattern))
        if mask.is_symlink() and not _inside_any(mask, roots):
            problems.append(Problem("preprocessing.beamstop_mask", "beamstopMask", True,
                                    f"-beamstopMask: {str(mask)!r} (a symlink to {os.path.realpath(mask)}) is "
                                    "outside the data folders"))
    if problems:
        raise ParameterError(problems)
    return params.replace(changes) if changes else params


NOT_REGULAR = "is not a regular file (a FIFO, a device or a folder)"


def missing_inputs(params: Parameters) -> list[Problem]:
    """What a worker would fail on at once: no data named, or a named input file that does not exist (a live
    source's file need not exist yet).

    ``params`` should already be confined (absolute paths). Only what this server can see is checked.
    """
    problems: list[Problem] = []
    data = params.data
    if data.live_source.startswith("pva://"):
        pass  # frames over pvAccess: no file
    elif data.live_source != "none" and data.file_pattern:
        # a live source's file appears when the detector starts writing; the run waits -liveStall for it. One that
        # is there already must be a regular file: HDF5 blocks the whole worker in open() on a FIFO
        first = Path(format_pattern(data.file_pattern, data.first_file_index))
        if first.exists() and not first.is_file():
            problems.append(Problem("data.file_pattern", "fp", data.file_pattern,
                                    f"-fp={data.file_pattern}: this file {NOT_REGULAR}"))
    elif not data.simulate:
        if not data.file_pattern:
            problems.append(Problem("data.file_pattern", "fp", "",
                                    "-fp: no data named: give the data files with -fp=<file or pattern> "
                                    "(or -simulate=1 for a simulated scan)"))
        else:
            first = Path(format_pattern(data.file_pattern, data.first_file_index))
            if not first.is_file():
                which = (f"its first file {first} (-fs={data.first_file_index})" if is_multi_file(data.file_pattern)
                         else "this file")
                state = NOT_REGULAR if first.exists() else "does not exist"
                problems.append(Problem("data.file_pattern", "fp", data.file_pattern,
                                        f"-fp={data.file_pattern}: {which} {state}"))
            elif params.preprocessing.beamstop_mask and not beamstop_path(data.file_pattern).is_file():
                problems.append(Problem("preprocessing.beamstop_mask", "beamstopMask", True,
                                        f"-beamstopMask: {beamstop_path(data.file_pattern)} does not exist"))
    for path in FILE_PATHS:
        value = params.get(path)
        if not value or path in PATTERN_PATHS or _in_data_file(path, value):
            continue
        file = split_dataset(value)[0] if path in DATASET_PATHS else Path(value)
        if not file.is_file():
            spec = spec_for_path(path)
            state = f"{file} {NOT_REGULAR}" if file.exists() else f"no such file ({file})"
            problems.append(Problem(path, spec.flag, value, f"-{spec.flag}={value}: {state}"))
    return problems


def check_submission(params: Parameters) -> Parameters:
    """The parameters a user submitted, confined to the data roots and with every input file present;
    ParameterError names each flag and path that is wrong."""
    confined = confine_parameters(params)
    problems = missing_inputs(confined) + streaming_problems(confined)
    if problems:
        raise ParameterError(problems)
    return confined


def streaming_problems(params: Parameters) -> list[Problem]:
    """What a live source (``-liveSource``) cannot do, refused at submit as the worker would: a ``pva://`` address
    it cannot parse, or whose ``buffer_at=`` is not one of ``PTYCHOPY_PVA_BUFFERS`` (a worker would connect to any
    host and port named there; filed under ``-liveSource``); DM, per-position fits, several GPUs
    (docs/streaming.md, filed under ``-algorithm``)."""
    if params.data.live_source == "none":
        return []
    from ptychopy.pva_source import SCHEME, parse_address
    from reconstruction.errors import InputDataError
    from reconstruction.live import LiveSourceError
    from reconstruction.live.run import check_streaming

    problems = []
    if params.data.live_source.startswith(SCHEME):  # the worker's own parse: refused here, not after the queue
        try:
            at = parse_address(params.data.live_source).buffer_at
        except LiveSourceError as exc:
            problems.append(Problem("data.live_source", "liveSource", params.data.live_source, str(exc)))
        else:
            if at and at not in settings.PTYCHOPY_PVA_BUFFERS:
                allowed = ", ".join(settings.PTYCHOPY_PVA_BUFFERS) or "none"
                problems.append(Problem("data.live_source", "liveSource", params.data.live_source,
                                        f"buffer_at={at}: this server lets workers reach only the EPICS bridges' "
                                        f"frame buffers named in PTYCHOPY_PVA_BUFFERS ({allowed}); a bridge "
                                        f"submitting over HTTP needs its [stream] buffer_address there (the web "
                                        f"server's environment, docs/deploy.md), or [stream] buffer_mib = 0"))
    try:
        check_streaming(params)
    except InputDataError as exc:
        problems.append(Problem("reconstruction.algorithm", "algorithm", params.reconstruction.algorithm, str(exc)))
    return problems
