"""HDF5 files in the browser: h5web's viewer (built from npm into static/vendor/h5web, frontend/h5web/build.sh)
over h5grove's content and encoding API, with our access rules.

Only files inside the data roots (``PTYCHOPY_DATA_ROOTS``, the uploads folder) or the results folder
(``PTYCHOPY_RESULTS_DIR``) are served, resolved first (symlinks included: ``../`` and links that leave are refused,
403 naming the path); the same login as result downloads (a session, or an ``Authorization: Token`` header); a
missing file is 404, a file that is not HDF5 400, a file whose external links, virtual datasets or external raw
storage lead out of those folders 403, a ``/data`` selection larger than ``MAX_DATA_BYTES`` and ``/attr``
attributes larger than ``MAX_ATTR_BYTES`` 413 (they would be read whole into the server's memory).
h5grove's endpoints (``meta``, ``attr``, ``data``, ``paths``) take ``?file=<path>&path=<entity>`` as its own
servers do; its errors keep their status and JSON ``message``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET
from h5grove.content import DatasetContent, ResolvedEntityContent, get_content_from_file, get_list_of_paths
from h5grove.encoders import encode
from h5grove.utils import parse_bool_arg, parse_slice

from webapp.accounts.auth import login_or_token_required

from .paths import PathNotAllowed, confine, data_roots

MAX_DATA_BYTES = 64 * 2**20  # one /data answer: a 4096^2 float32 image is 64 MiB; a whole raw scan is refused
MAX_ATTR_BYTES = 2**20  # one /attr answer: NeXus attributes are names and units; a dense attribute may be GBs
MAX_MESSAGE_CHARS = 500  # a refusal names the path it was given, cut to this


class FileRefused(Exception):
    """A request for a file or an entity that is not served: ``status`` and the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def browsable_roots() -> list[Path]:
    """Where files may be browsed: the data roots (with uploads), then the results folder."""
    return [*data_roots(), Path(settings.PTYCHOPY_RESULTS_DIR).expanduser().resolve()]


def browsable_file(raw: str | None) -> str:
    """The resolved path of an HDF5 file a request names, or FileRefused (400/403/404) naming it. A file with an
    external link that leads outside the roots (or to no file) is refused 403 by ``confine``: h5py follows such
    links, so they would show another file's tree and values."""
    if not raw:
        raise FileRefused(400, "name a file: ?file=<path>")
    try:
        path = confine(raw, browsable_roots())
    except PathNotAllowed as exc:
        raise FileRefused(403, str(exc)) from None
    if not Path(path).is_file():
        raise FileRefused(404, f"{raw!r}: no such file")
    if not h5py.is_hdf5(path):
        raise FileRefused(400, f"{raw!r} is not an HDF5 file")
    return path


def _selected_bytes(filename: str, dataset_path: str, selection: str | None) -> int:
    """Bytes a ``selection`` (h5grove's slice syntax, e.g. ``"0,:,10:20"``; None for all) of the dataset at
    ``dataset_path`` of ``filename`` reads."""
    with h5py.File(filename, "r") as f:
        dataset = f[dataset_path]
        shape, itemsize = dataset.shape or (), dataset.dtype.itemsize
    counts = list(shape)
    if selection:
        for axis, part in enumerate(parse_slice(selection)[: len(shape)]):
            counts[axis] = 1 if isinstance(part, int) else len(range(*part.indices(shape[axis])))
    return int(np.prod(counts, dtype=np.int64)) * itemsize


def _attribute_bytes(filename: str, entity_path: str, keys: list[str] | None) -> tuple[int, str]:
    """Bytes the attributes ``keys`` (None: all) of the entity at ``entity_path`` hold, and the largest one's name;
    their values are not read."""
    total, largest, largest_bytes = 0, "", -1
    with h5py.File(filename, "r") as f:
        attrs = f[entity_path].attrs
        for name in keys if keys is not None else list(attrs):
            if name not in attrs:
                continue  # h5grove says which key is missing
            attr = attrs.get_id(name)
            size = int(np.prod(attr.shape or (), dtype=np.int64)) * attr.dtype.itemsize
            total += size
            if size > largest_bytes:
                largest, largest_bytes = name, size
    return total, largest


def _entity_path(request: HttpRequest) -> str | None:
    """The request's ``path`` (an entity in the file); FileRefused 400 for one with a NUL (h5py: RuntimeError)."""
    path = request.GET.get("path")
    if path is not None and "\x00" in path:
        raise FileRefused(400, "the entity path contains a NUL character")
    return path


def _h5grove_error(status: int, message: str) -> Exception:
    return FileRefused(status, message)


def _encoded(content: Any, fmt: str | None = "json") -> HttpResponse:
    out = encode(content, fmt)
    response = HttpResponse(out.content)
    for key, value in out.headers.items():
        response[key] = value
    return response


def _endpoint(handler: Callable[[HttpRequest, str], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """One h5grove endpoint: GET, logged in (session or token), the file confined, errors as JSON."""

    @require_GET
    @login_or_token_required
    def view(request: HttpRequest) -> HttpResponse:
        try:
            return handler(request, browsable_file(request.GET.get("file")))
        except FileRefused as exc:
            return JsonResponse({"message": _cut(str(exc))}, status=exc.status)
        except (KeyError, TypeError, ValueError) as exc:  # h5grove's refusals of a path, a selection, a format
            return JsonResponse({"message": _cut(f"{type(exc).__name__}: {exc}")}, status=400)

    view.__name__ = view.__qualname__ = f"h5grove_{handler.__name__.lstrip('_')}"
    view.__doc__ = handler.__doc__
    return view


def _cut(message: str) -> str:
    """``message`` at most ``MAX_MESSAGE_CHARS`` long: h5grove's refusals repeat the path they were given."""
    return message if len(message) <= MAX_MESSAGE_CHARS else f"{message[:MAX_MESSAGE_CHARS]}... (cut)"


def _meta(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/meta``: an entity's metadata (its children for a group)."""
    with get_content_from_file(filename, _entity_path(request), _h5grove_error,
                               request.GET.get("resolve_links")) as content:
        return _encoded(content.metadata())


def _attr(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/attr``: an entity's attribute values."""
    keys = request.GET.getlist("attr_keys") or None
    with get_content_from_file(filename, _entity_path(request), _h5grove_error) as content:
        if not isinstance(content, ResolvedEntityContent):
            raise FileRefused(400, f"{content.path} is not a resolved entity")
        size, largest = _attribute_bytes(filename, content.path, keys)
        if size > MAX_ATTR_BYTES:
            raise FileRefused(413, f"{content.path}: its attributes hold {size / 1024:.0f} kB (the largest "
                                   f"{largest!r}), more than the {MAX_ATTR_BYTES // 1024} kB one request may read; "
                                   "ask for others by name (attr_keys=...)")
        return _encoded(content.attributes(keys))


def _data(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/data``: a dataset's values (``selection``, ``format``: json, bin, npy, csv, tiff)."""
    with get_content_from_file(filename, _entity_path(request), _h5grove_error) as content:
        if not isinstance(content, DatasetContent):
            raise FileRefused(400, f"{content.path} is not a dataset")
        size = _selected_bytes(filename, content.path, request.GET.get("selection"))
        if size > MAX_DATA_BYTES:
            raise FileRefused(413, f"{content.path}: the selection reads {size / 2**20:.0f} MiB, more than the "
                                   f"{MAX_DATA_BYTES // 2**20} MiB one request may read; ask for a slice "
                                   "(selection=0,:,: for the first frame)")
        data = content.data(request.GET.get("selection"), parse_bool_arg(request.GET.get("flatten"), fallback=False),
                            request.GET.get("dtype"))
        return _encoded(data, request.GET.get("format"))


def _paths(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/paths``: every entity path below ``path`` (h5web's search)."""
    with get_list_of_paths(filename, _entity_path(request), _h5grove_error,
                           request.GET.get("resolve_links")) as paths:
        return _encoded(paths)


meta = _endpoint(_meta)
attr = _endpoint(_attr)
data = _endpoint(_data)
paths = _endpoint(_paths)


@require_GET
@login_required
def viewer(request: HttpRequest) -> HttpResponse:
    """The h5web page of ``?file=<path>`` (``&path=<entity>`` opens that entity first)."""
    try:
        path = browsable_file(request.GET.get("file"))
    except FileRefused as exc:
        return render(request, "files/view.html", {"error": str(exc)}, status=exc.status)
    api = reverse("files:meta").removesuffix("/meta")  # h5web appends /meta, /attr, /data, /paths
    return render(request, "files/view.html", {"file": path, "api": api,
                                               "initial_path": request.GET.get("path") or "/"})
