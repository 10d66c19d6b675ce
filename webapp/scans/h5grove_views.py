"""HDF5 files in the browser: h5web's viewer (built from npm into static/vendor/h5web, frontend/h5web/build.sh)
over h5grove's content and encoding API, with our access rules.

Only files inside the data roots (``PTYCHOPY_DATA_ROOTS``, the uploads folder) or the results folder
(``PTYCHOPY_RESULTS_DIR``) are served, resolved first (symlinks included: ``../`` and links that leave are refused,
403 naming the path); the same login as result downloads (a session, or an ``Authorization: Token`` header); a
missing file is 404, a file that is not HDF5 400, a file whose external links, virtual datasets or external raw
storage lead out of those folders 403, a ``/data`` answer larger than ``MAX_DATA_BYTES`` (variable-length values
measured as read, ``dtype=safe`` and the encoding counted) and ``/attr`` attributes larger than ``MAX_ATTR_BYTES``
413 (they would be read whole into the server's memory); a group lists its first ``MAX_CHILDREN`` children and
``/paths`` the first ``MAX_PATHS`` paths (:mod:`webapp.scans.h5grove_limits`).
h5grove's endpoints (``meta``, ``attr``, ``data``, ``paths``) take ``?file=<path>&path=<entity>`` as its own
servers do; its errors keep their status and JSON ``message``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
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
from h5grove.content import DatasetContent, GroupContent, ResolvedEntityContent, create_content
from h5grove.encoders import encode
from h5grove.models import LinkResolution
from h5grove.utils import (
    NotFoundError,
    QueryArgumentError,
    convert,
    get_dataset_slice,
    hdf_path_join,
    open_file_with_error_fallback,
    parse_bool_arg,
    parse_link_resolution_arg,
)

from webapp.accounts.auth import login_or_token_required

from .h5grove_limits import (
    TooLarge,
    bytes_per_value,
    first_children,
    first_paths,
    read_bounded,
    selected_count,
    selection_index,
)
from .paths import PathNotAllowed, confine, data_roots

MAX_DATA_BYTES = 64 * 2**20  # one /data answer: a 4096^2 float32 image is 64 MiB; a whole raw scan is refused
MAX_ATTR_BYTES = 2**20  # one /attr answer: NeXus attributes are names and units; a dense attribute may be GBs
MAX_CHILDREN = 1000  # one /meta answer lists a group's first 1000 children (about 0.5 s of a worker)
MAX_PATHS = 10000  # one /paths answer: the first 10,000 entity paths below the entity
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


@contextlib.contextmanager
def _opened(filename: str, entity_path: str | None, resolve_links_arg: str | None = None) -> Iterator[
        tuple[h5py.File, Any, LinkResolution]]:
    """The open file, h5grove's content of ``entity_path`` and the link resolution asked for, with h5grove's
    refusals (404 for an entity not in the file, 422 for a bad argument) as FileRefused."""
    try:
        resolve = parse_link_resolution_arg(resolve_links_arg, fallback=LinkResolution.ONLY_VALID)
    except QueryArgumentError as exc:
        raise FileRefused(422, str(exc)) from None
    try:
        with open_file_with_error_fallback(filename, _h5grove_error) as f:
            yield f, create_content(f, entity_path, resolve), resolve
    except NotFoundError as exc:
        raise FileRefused(404, str(exc)) from None
    except QueryArgumentError as exc:  # dtype=safe of strings, a format the values cannot take
        raise FileRefused(422, str(exc)) from None


def _meta(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/meta``: an entity's metadata; a group's children are its first ``MAX_CHILDREN`` (then
    ``children_cut`` is true and ``children_count`` says how many it has)."""
    with _opened(filename, _entity_path(request), request.GET.get("resolve_links")) as (f, content, resolve):
        if not isinstance(content, GroupContent):
            return _encoded(content.metadata())
        names, count = first_children(f[content.path], MAX_CHILDREN)
        meta = {**ResolvedEntityContent.metadata(content),
                "children": [create_content(f, hdf_path_join(content.path, name), resolve).metadata(0)
                             for name in names]}
        if count > len(names):
            meta.update(children_cut=True, children_count=count)
        return _encoded(meta)


def _attr(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/attr``: an entity's attribute values."""
    keys = request.GET.getlist("attr_keys") or None
    with _opened(filename, _entity_path(request)) as (_, content, _):
        if not isinstance(content, ResolvedEntityContent):
            raise FileRefused(400, f"{content.path} is not a resolved entity")
        size, largest = _attribute_bytes(filename, content.path, keys)
        if size > MAX_ATTR_BYTES:
            raise FileRefused(413, f"{content.path}: its attributes hold {size / 1024:.0f} kB (the largest "
                                   f"{largest!r}), more than the {MAX_ATTR_BYTES // 1024} kB one request may read; "
                                   "ask for others by name (attr_keys=...)")
        return _encoded(content.attributes(keys))


def _data(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/data``: a dataset's values (``selection``, ``flatten``, ``dtype``: origin or safe, ``format``:
    json, bin, npy, csv, tiff); 413 when the answer would pass ``MAX_DATA_BYTES``: estimated from the selection
    before reading, variable-length values measured as they are read, the encoded answer measured last."""
    selection, fmt, conversion = request.GET.get("selection"), request.GET.get("format"), request.GET.get("dtype")
    with _opened(filename, _entity_path(request)) as (f, content, _):
        if not isinstance(content, DatasetContent):
            raise FileRefused(400, f"{content.path} is not a dataset")
        dataset = f[content.path]
        if dataset.dtype.hasobject and fmt not in (None, "json"):
            raise FileRefused(400, f"{content.path} holds variable-length values or references: ask for "
                                   "format=json")
        index = selection_index(dataset.shape or (), selection) if dataset.shape is not None else ()
        estimate = selected_count(dataset.shape or (), index) * bytes_per_value(dataset.dtype, conversion, fmt)
        if estimate > MAX_DATA_BYTES:
            raise _too_large(content.path, "the selection returns at least", estimate)
        try:
            values = (read_bounded(dataset, index, MAX_DATA_BYTES) if dataset.dtype.hasobject
                      else get_dataset_slice(dataset, selection))
        except TooLarge as exc:
            raise _too_large(content.path, "the selected values hold more than", exc.nbytes) from None
        values = convert(values, conversion)
        if parse_bool_arg(request.GET.get("flatten"), fallback=False) and isinstance(values, np.ndarray):
            values = np.ravel(values)
        response = _encoded(values, fmt)
        if len(response.content) > MAX_DATA_BYTES:
            raise _too_large(content.path, f"the {fmt or 'json'} answer is", len(response.content))
        return response


def _too_large(entity: str, what: str, nbytes: int) -> FileRefused:
    """413 naming the dataset, its size and the bound."""
    return FileRefused(413, f"{entity}: {what} {_size(nbytes)}, more than the {_size(MAX_DATA_BYTES)} one request "
                            "may return; ask for a slice (selection=0,:,: for the first frame)")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 1024:.1f} kB"


def _paths(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/paths``: the entity paths below ``path`` (h5web's search), the first ``MAX_PATHS`` of them
    (then the header ``X-Paths-Cut`` says so)."""
    with _opened(filename, _entity_path(request), request.GET.get("resolve_links")) as (f, content, resolve):
        if not isinstance(content, GroupContent):
            raise FileRefused(400, f"{content.path} is not a group")
        names, cut = first_paths(f[content.path], MAX_PATHS)
        paths = [content.path, *(create_content(f, hdf_path_join(content.path, name.decode()), resolve).path
                                 for name in names)]
        response = _encoded(paths)
        if cut:
            response["X-Paths-Cut"] = f"the first {MAX_PATHS} paths"
        return response


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
