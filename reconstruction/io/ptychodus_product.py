"""ptychodus product files (HDF5): written from a ptychopy result so that ptychodus (and through it pty-chi and
tike) can continue from it, and read back as a source of object, probe and positions.

The layout is the one ``ptychodus.api.io.save_product``/``load_product`` use (ptychodus 1.7): file attributes
``name``, ``comments``, ``detector_object_distance_m``, ``photon_energy_eV``, ``probe_photon_count``,
``exposure_time_s``, ``mass_attenuation_m2_per_kg``, ``tomography_angle_deg``, ``focus_object_distance_m``,
``tilt_angle_deg``, ``far_field``; datasets ``probe`` ``(modes, n, n)`` with ``pixel_{width,height}_m``,
``object`` ``(H, W)`` with ``center_{x,y}_m`` and ``pixel_{width,height}_m``, ``probe_position_indexes``,
``probe_position_{x,y}_m`` (probe centres), ``loss_epochs``, ``loss_values`` (ptychodus itself writes a
``(1, modes, n, n)`` probe and ``(layers, H, W)`` object; its reader takes both). A ptychopy result file carries
the same members at its root, hard-linked to its CXI datasets, so ptychodus opens it as a product too.
Positions follow :mod:`.result_layout` (probe centres from the object array's centre, which is at 0 m).
"""

from __future__ import annotations

import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputDataError
from ..state import Result
from .errors import OutputWriteError
from .result_layout import (
    EV_J,
    corners_from_centres_px,
    object_plot,
    params_dict,
    photon_energy_j,
    probe_centres_m,
)


def fill_product(f: h5py.File, result: Result, name: str, comments: str,
                 links: dict[str, str] | None = None) -> None:
    """Write the product's attributes and members at the root of the open file ``f``. ``links`` maps a member
    (``object``, ``probe``, ``loss_epochs``, ``loss_values``) to a dataset already in ``f`` that becomes that member
    by a hard link (no copy; a result file does this). :class:`InputDataError` when the result lacks the geometry."""
    experiment = (params_dict(result.parameters) or {}).get("experiment")
    if not experiment or not result.pixel_size_m:
        raise InputDataError("a ptychodus product needs the wavelength, the detector distance and the pixel size, "
                             "and this result has no parameters to take them from")
    dx = float(result.pixel_size_m)
    obj = np.asarray(result.object, dtype=np.complex64)
    probe = np.asarray(result.probe, dtype=np.complex64)
    probe = probe if probe.ndim == 3 else probe[None]
    centres = probe_centres_m(result.positions_px, probe.shape, obj.shape, dx)
    f.attrs.update({
        "name": name, "comments": comments,
        "detector_object_distance_m": float(experiment["detector_distance_m"]),
        "photon_energy_eV": photon_energy_j(float(experiment["wavelength_m"])) / EV_J,
        "probe_photon_count": 0.0, "exposure_time_s": 0.0, "mass_attenuation_m2_per_kg": 0.0,
        "tomography_angle_deg": 0.0, "focus_object_distance_m": 0.0, "tilt_angle_deg": 0.0, "far_field": True,
    })
    members = {"object": obj, "probe": probe, "loss_epochs": np.arange(len(result.errors), dtype=np.int64),
               "loss_values": np.asarray(result.errors, dtype=np.float64).reshape(-1)}
    for member, data in members.items():
        if links and member in links:
            f[member] = f[links[member]]
        else:
            f.create_dataset(member, data=data)
    f["object"].attrs.update({"center_x_m": 0.0, "center_y_m": 0.0, "pixel_width_m": dx, "pixel_height_m": dx})
    f["probe"].attrs.update({"pixel_width_m": dx, "pixel_height_m": dx})
    f.create_dataset("probe_position_indexes", data=np.arange(centres.shape[0], dtype=np.int64))
    f.create_dataset("probe_position_x_m", data=centres[:, 0]).attrs["units"] = "m"
    f.create_dataset("probe_position_y_m", data=centres[:, 1]).attrs["units"] = "m"


def _product_image(result: Result, name: str, comments: str) -> bytes:
    """The product file's bytes: ptychodus' members, plus a NeXus ``default`` chain (``/`` -> ``entry`` ->
    ``data``, an NXdata of the object's phase) so that h5web, silx and NeXpy show the object on opening (the phase
    is a float32 copy: the file grows by half the object's size)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        fill_product(f, result, name, comments)
        f.attrs.update({"NX_class": "NXroot", "default": "entry"})
        entry = f.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "default": "data"})
        plot = object_plot(entry, "data", np.asarray(result.object, dtype=np.complex64), result.pixel_size_m,
                           f"{name or 'ptychopy'}: object phase", amplitude=False)
        plot["object"] = h5py.SoftLink("/object")
    return buffer.getvalue()


def write_ptychodus_product(result: Result, path: Path | str, *, name: str = "", comments: str = "") -> Path:
    """Write ``result`` as a ptychodus product file at ``path`` (replacing it, atomically: a temporary file beside
    it is renamed). :class:`InputDataError` when the result lacks the geometry a product needs;
    :class:`OutputWriteError` naming ``path`` when it cannot be written."""
    path = Path(path)
    image = _product_image(result, name, comments)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(image)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write ptychodus product {path}: {exc.strerror or exc}", path) from exc
    return path


@dataclass(frozen=True)
class ProductGuess:
    """What a ptychodus product gives a new run: object ``(H, W)`` complex64 (layer 0), probe modes
    ``(modes, n, n)`` complex64 (the first OPR mode), window corners ``(N, 2)`` (row, col) in object pixels,
    probe centres ``(N, 2)`` (row, col) in metres as stored, and the object pixel size in metres."""

    object: np.ndarray
    probe: np.ndarray
    positions_px: np.ndarray
    positions_m: np.ndarray
    pixel_size_m: float


PRODUCT_KEYS = ("object", "probe", "probe_position_x_m", "probe_position_y_m")


def is_ptychodus_product(f: h5py.File) -> bool:
    """Whether the open file ``f`` has a ptychodus product's object, probe and positions."""
    return all(isinstance(f.get(k), h5py.Dataset) for k in PRODUCT_KEYS)


def read_ptychodus_product(path: Path | str) -> ProductGuess:
    """Object, probe and positions of the ptychodus product file ``path``; :class:`InputDataError` naming the file
    and what is missing or wrong."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputDataError(f"file {path}: ptychodus product not found") from None
    except OSError as exc:
        raise InputDataError(f"file {path}: not a readable HDF5 file ({exc.strerror or 'not HDF5'})") from exc
    with f:
        missing = [k for k in PRODUCT_KEYS if not isinstance(f.get(k), h5py.Dataset)]
        if missing:
            raise InputDataError(f"file {path}: not a ptychodus product (no dataset {', '.join(missing)})")
        obj_ds, probe_ds = f["object"], f["probe"]
        obj, probe = np.asarray(obj_ds[()]), np.asarray(probe_ds[()])
        if not (np.iscomplexobj(obj) and np.iscomplexobj(probe)):
            raise InputDataError(f"file {path}: the product's object and probe must be complex")
        try:
            dx = float(obj_ds.attrs["pixel_width_m"])
            dy = float(obj_ds.attrs["pixel_height_m"])
            cx, cy = float(obj_ds.attrs["center_x_m"]), float(obj_ds.attrs["center_y_m"])
        except KeyError as exc:
            raise InputDataError(f"file {path}, dataset /object: attribute {exc.args[0]} is missing") from None
        x_m = np.asarray(f["probe_position_x_m"][()], dtype=np.float64).reshape(-1)
        y_m = np.asarray(f["probe_position_y_m"][()], dtype=np.float64).reshape(-1)
    if obj.ndim == 3 and obj.shape[0] > 1:
        raise InputDataError(f"file {path}, dataset /object: {obj.shape[0]} layers (multislice); ptychopy "
                             f"reconstructs one layer")
    if abs(dx - dy) > 1e-6 * abs(dx):
        raise InputDataError(f"file {path}, dataset /object: pixels of {dx} m x {dy} m; ptychopy needs square pixels")
    if x_m.shape != y_m.shape:
        raise InputDataError(f"file {path}: {x_m.size} x positions but {y_m.size} y positions")
    obj2 = obj.reshape(obj.shape[-2:]).astype(np.complex64)
    modes = probe.reshape((-1,) + probe.shape[-3:])[0] if probe.ndim >= 3 else probe[None]
    corners = corners_from_centres_px(x_m, y_m, modes.shape, obj2.shape, dx, dy, cx, cy)
    return ProductGuess(object=obj2, probe=modes.astype(np.complex64), positions_px=corners,
                        positions_m=np.stack([y_m, x_m], axis=1), pixel_size_m=dx)
