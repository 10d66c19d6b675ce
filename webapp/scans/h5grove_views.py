"""HDF5 files in the browser: h5web's viewer (built from npm into static/vendor/h5web, frontend/h5web/build.sh)
over h5grove's content and encoding API, with our access rules.

Only files inside the data roots (``PTYCHOPY_DATA_ROOTS``, the uploads folder) or the results folder
(``PTYCHOPY_RESULTS_DIR``) are served, resolved first (symlinks included: ``../`` and links that leave are refused,
403 naming the path); the same login as result downloads (a session, or an ``Authorization: Token`` header); a
missing file is 404, a file that is not HDF5 400. h5grove's endpoints (``meta``, ``attr``, ``data``, ``paths``)
take ``?file=<path>&path=<entity>`` as its own servers do; its errors keep their status and JSON ``message``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET
from h5grove.content import DatasetContent, ResolvedEntityContent, get_content_from_file, get_list_of_paths
from h5grove.encoders import encode
from h5grove.utils import parse_bool_arg

from webapp.accounts.auth import login_or_token_required

from .paths import PathNotAllowed, confine, data_roots


class FileRefused(Exception):
    """A request for a file or an entity that is not served: ``status`` and the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def browsable_roots() -> list[Path]:
    """Where files may be browsed: the data roots (with uploads), then the results folder."""
    return [*data_roots(), Path(settings.PTYCHOPY_RESULTS_DIR).expanduser().resolve()]


def browsable_file(raw: str | None) -> str:
    """The resolved path of an HDF5 file a request names, or FileRefused (400/403/404) naming it."""
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
            return JsonResponse({"message": str(exc)}, status=exc.status)
        except (KeyError, TypeError, ValueError) as exc:  # h5grove's refusals of a path, a selection, a format
            return JsonResponse({"message": f"{type(exc).__name__}: {exc}"}, status=400)

    view.__name__ = view.__qualname__ = f"h5grove_{handler.__name__.lstrip('_')}"
    view.__doc__ = handler.__doc__
    return view


def _meta(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/meta``: an entity's metadata (its children for a group)."""
    with get_content_from_file(filename, request.GET.get("path"), _h5grove_error,
                               request.GET.get("resolve_links")) as content:
        return _encoded(content.metadata())


def _attr(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/attr``: an entity's attribute values."""
    keys = request.GET.getlist("attr_keys") or None
    with get_content_from_file(filename, request.GET.get("path"), _h5grove_error) as content:
        if not isinstance(content, ResolvedEntityContent):
            raise FileRefused(400, f"{content.path} is not a resolved entity")
        return _encoded(content.attributes(keys))


def _data(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/data``: a dataset's values (``selection``, ``format``: json, bin, npy, csv, tiff)."""
    with get_content_from_file(filename, request.GET.get("path"), _h5grove_error) as content:
        if not isinstance(content, DatasetContent):
            raise FileRefused(400, f"{content.path} is not a dataset")
        data = content.data(request.GET.get("selection"), parse_bool_arg(request.GET.get("flatten"), fallback=False),
                            request.GET.get("dtype"))
        return _encoded(data, request.GET.get("format"))


def _paths(request: HttpRequest, filename: str) -> HttpResponse:
    """h5grove ``/paths``: every entity path below ``path`` (h5web's search)."""
    with get_list_of_paths(filename, request.GET.get("path"), _h5grove_error,
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
