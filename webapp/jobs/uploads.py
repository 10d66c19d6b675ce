"""Files uploaded with the job form (positions, probe/object guesses, masks), kept under the uploads folder."""

from __future__ import annotations

import contextlib
import errno
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.uploadedfile import UploadedFile
from django.utils.text import get_valid_filename

from reconstruction.safe_paths import (
    MAX_NAME_CHARS,
    NAME_RULE,
    file_name_problem,
    is_inside,
    path_inside,
    sanitised_name,
)

#: Parameters that name one file and may be uploaded instead of typed.
UPLOADABLE = (
    "experiment.positions_file",
    "reconstruction.probe_guess",
    "reconstruction.object_guess",
    "preprocessing.bad_pixel_mask",
)


class UploadRejected(ValueError):
    """An upload that is too large or has no usable name."""


class UploadStorageFull(UploadRejected):
    """The uploads disk could not take the file (full, or failing): nothing of it was kept (HTTP 507)."""


def save_upload(upload: UploadedFile, username: str) -> Path:
    """Store ``upload`` as ``<uploads>/<user>/<random>/<safe name>`` and return that path."""
    limit = int(settings.PTYCHOPY_MAX_UPLOAD_BYTES)
    if upload.size is not None and upload.size > limit:
        raise UploadRejected(f"{upload.name}: {upload.size} bytes is more than the {limit} bytes allowed")
    name = _stored_name(upload.name or "")
    if not name or file_name_problem(name) is not None:
        raise UploadRejected(f"the uploaded file's name {upload.name!r} is not usable: {NAME_RULE}")
    uploads = Path(settings.PTYCHOPY_UPLOADS_DIR)
    user_part = sanitised_name(username or "anonymous")
    folder = path_inside(path_inside(uploads, user_part), uuid.uuid4().hex[:12])
    path = path_inside(folder, name)
    written = 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
                written += len(chunk)
    except OSError as exc:  # a full uploads disk: no truncated file is left behind
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
        needed = upload.size if upload.size is not None else written
        why = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise UploadStorageFull(
            f"{upload.name}: could not be stored ({why} writing the uploads folder: {needed} bytes needed); "
            "nothing was kept, the job was not submitted; try again once the operator has freed space") from exc
    return path


def _stored_name(raw: str) -> str:
    """The uploaded file's own name made safe: no folders, no leading dots, at most 100 characters with its
    extension kept; "" when nothing usable is left."""
    try:
        name = get_valid_filename(Path(raw).name).lstrip(".")
    except SuspiciousFileOperation:
        return ""
    if len(name) > MAX_NAME_CHARS:
        suffix = Path(name).suffix[:20]
        name = name[: MAX_NAME_CHARS - len(suffix)] + suffix
    return name


def discard_upload(path: Path | str) -> None:
    """Delete a stored upload and its random folder (a form that was rejected keeps no file)."""
    path = Path(path)
    uploads = Path(settings.PTYCHOPY_UPLOADS_DIR)
    if not is_inside(path, uploads) or path.parent.resolve() == uploads.resolve():
        return
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()
