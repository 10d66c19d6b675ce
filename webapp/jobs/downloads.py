"""Result files for download: the run's HDF5 file, TIFF/PNG/CSV exports (zipped) and a ptychodus product, made
from it on demand."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from .models import Job

FORMATS = ("h5", "tiff", "png", "csv", "ptychodus")
SINGLE_FILE = {"ptychodus": ".h5"}  # exports that are one file: sent as it is, not zipped
CONTENT_TYPES = {"h5": "application/x-hdf5", "ptychodus": "application/x-hdf5", "zip": "application/zip",
                 "tiff": "image/tiff", "png": "image/png", "csv": "text/csv"}


class NoResult(Exception):
    """The job has no result file (yet)."""


@dataclass(frozen=True)
class Download:
    path: Path
    filename: str
    content_type: str


def result_download(job: Job, fmt: str) -> Download:
    """The file to send for ``job`` in format ``fmt``: zipped exports are made once and kept beside the result;
    a one-file export (the ptychodus product) is written again on each request (atomically)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not job.result_path or not Path(job.result_path).is_file():
        raise NoResult(f"job {job.pk} has no result file")
    result = Path(job.result_path)
    stem = f"ptychopy_job{job.pk}"
    if fmt == "h5":
        return Download(result, f"{stem}.h5", CONTENT_TYPES["h5"])
    folder = result.parent / f"export_{fmt}"
    if fmt in SINGLE_FILE:
        files = export_files(result, fmt, folder, stem)
        return Download(files[0], f"{stem}_{fmt}{SINGLE_FILE[fmt]}", CONTENT_TYPES[fmt])
    bundle = result.parent / f"{stem}_{fmt}.zip"
    if not bundle.is_file() or bundle.stat().st_mtime < result.stat().st_mtime:
        files = export_files(result, fmt, folder, stem)
        tmp = bundle.with_suffix(".zip.part")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(f, arcname=f.name)
        tmp.replace(bundle)
    return Download(bundle, bundle.name, CONTENT_TYPES["zip"])


def export_files(result: Path, fmt: str, folder: Path, default_name: str) -> list[Path]:
    """Write the ``fmt`` export of HDF5 result ``result`` into ``folder``; the files written, named after the
    job's ``-jobID`` or, without one, ``default_name``."""
    from reconstruction.io import export

    folder.mkdir(parents=True, exist_ok=True)
    written = export.export_result(result, fmt, folder, default_name=default_name)
    return sorted(Path(p) for p in written)
