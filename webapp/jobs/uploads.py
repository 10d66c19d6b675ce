"""Files uploaded with the job form (positions, probe/object guesses, masks), kept under the uploads folder."""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.utils.text import get_valid_filename

#: Parameters that name one file and may be uploaded instead of typed.
UPLOADABLE = (
    "experiment.positions_file",
    "reconstruction.probe_guess",
    "reconstruction.object_guess",
    "preprocessing.bad_pixel_mask",
)


class UploadRejected(ValueError):
    """An upload that is too large or has no usable name."""


def save_upload(upload: UploadedFile, username: str) -> Path:
    """Store ``upload`` as ``<uploads>/<user>/<random>/<safe name>`` and return that path."""
    limit = int(settings.PTYCHOPY_MAX_UPLOAD_BYTES)
    if upload.size is not None and upload.size > limit:
        raise UploadRejected(f"{upload.name}: {upload.size} bytes is more than the {limit} bytes allowed")
    name = get_valid_filename(Path(upload.name or "").name) if upload.name else ""
    if not name or name in (".", ".."):
        raise UploadRejected("the uploaded file has no usable name")
    user_part = get_valid_filename(username) or "anonymous"
    folder = Path(settings.PTYCHOPY_UPLOADS_DIR) / user_part / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return path
