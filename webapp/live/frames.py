"""The binary frame a viewer receives: a length-prefixed JSON header followed by uint8 images.

Layout: 4-byte big-endian unsigned header length, the UTF-8 JSON header, then the images' bytes concatenated
(each image's ``offset`` counts from the end of the header, its ``pixel_m`` is the width of one of its pixels in
metres). ``positions`` (:func:`positions_header`, at most ``reconstruction.preview.MAX_PREVIEW_POSITIONS`` points)
carries the scan; a run that refines positions or fits their flux adds where they started and the flux.
Status changes travel as frames too: the header's ``status`` is then ``done``, ``failed`` or ``cancelled`` (with
``message``) and ``images`` may be empty.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_ERROR_POINTS = 500
#: All probe images of a frame (each mode's amplitude and phase) together stay under this many pixels (the
#: object's two images are at most 512 x 512 each), so a frame stays well under 1 MB whatever the number of modes.
MAX_PROBE_PIXELS = 256 * 256 * 2
_LEN = struct.Struct(">I")


@dataclass(frozen=True, eq=False)
class FrameImage:
    """One uint8 image of a frame and the value range its 0..255 maps to."""

    name: str  # object_amplitude, object_phase, probe_amplitude_0, probe_phase_0, ...
    pixels: np.ndarray  # (h, w) uint8
    vmin: float
    vmax: float
    pixel_m: float | None = None  # width of one of these pixels in the sample plane (None: unknown)


def limit_probe_images(images: list[FrameImage], budget: int = MAX_PROBE_PIXELS) -> list[FrameImage]:
    """The images with every ``probe_*`` image strided down so that together they fit ``budget`` pixels (their
    ``pixel_m`` grows by the stride)."""
    probes = [img for img in images if img.name.startswith("probe_")]
    total = sum(img.pixels.size for img in probes)
    if total <= budget:
        return images
    stride = int(np.ceil(np.sqrt(total / budget)))
    return [FrameImage(img.name, np.ascontiguousarray(img.pixels[::stride, ::stride]), img.vmin, img.vmax,
                       None if img.pixel_m is None else img.pixel_m * stride)
            if img.name.startswith("probe_") else img for img in images]


def downsample_errors(errors: list[float], limit: int = MAX_ERROR_POINTS) -> tuple[list[int], list[float]]:
    """At most ``limit`` (iteration, error) points, evenly spread, always keeping the first and the last."""
    n = len(errors)
    if n <= limit:
        return list(range(1, n + 1)), [float(e) for e in errors]
    idx = np.unique(np.linspace(0, n - 1, limit).round().astype(int))
    return [int(i) + 1 for i in idx], [float(errors[i]) for i in idx]


def positions_header(start_px: np.ndarray, current_px: np.ndarray, stride: int, *, refined: bool = True,
                     flux: np.ndarray | None = None, errors: np.ndarray | None = None) -> dict[str, Any]:
    """The header's ``positions`` entry: every ``stride``-th position's row and column in object pixels now
    (``row``, ``col``), to 1/1000 px, ``refined`` (whether they move) and, when they do, where they started
    (``row0``, ``col0``); with a flux fit, ``flux`` (relative, to 1/1000); with per-position errors, ``error``
    (4 significant digits, null where not measured yet)."""
    def rounded(values: np.ndarray) -> list[float]:
        return [round(float(v), 3) for v in values]

    out: dict[str, Any] = {"row": rounded(current_px[:, 0]), "col": rounded(current_px[:, 1]), "stride": int(stride),
                           "refined": bool(refined)}
    if refined:
        out["row0"], out["col0"] = rounded(start_px[:, 0]), rounded(start_px[:, 1])
    if flux is not None:
        out["flux"] = rounded(flux)
    if errors is not None:
        out["error"] = [float(f"{e:.4g}") if np.isfinite(e) else None for e in errors.tolist()]
    return out


def encode_frame(header: dict[str, Any], images: list[FrameImage]) -> bytes:
    """Pack ``header`` (without ``images``) and ``images`` into one binary message."""
    payload = []
    entries = []
    offset = 0
    for img in images:
        pixels = np.ascontiguousarray(img.pixels, dtype=np.uint8)
        if pixels.ndim != 2:
            raise ValueError(f"frame image {img.name} must be 2-D, got shape {pixels.shape}")
        raw = pixels.tobytes()
        entry = {"name": img.name, "shape": [int(pixels.shape[0]), int(pixels.shape[1])], "offset": offset,
                 "length": len(raw), "vmin": _finite(img.vmin), "vmax": _finite(img.vmax)}
        if img.pixel_m is not None:
            entry["pixel_m"] = float(f"{img.pixel_m:.6g}")
        entries.append(entry)
        payload.append(raw)
        offset += len(raw)
    head = json.dumps({**header, "images": entries}, separators=(",", ":"), allow_nan=False).encode()
    return _LEN.pack(len(head)) + head + b"".join(payload)


def decode_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The header of a frame and where its payload starts."""
    (n,) = _LEN.unpack_from(data, 0)
    return json.loads(bytes(data[4 : 4 + n]).decode()), 4 + n


def decode_frame(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and ``{name: uint8 array}`` of a frame (tests and tools; browsers do the same in JS)."""
    header, start = decode_header(data)
    images = {}
    for entry in header["images"]:
        begin = start + entry["offset"]
        raw = data[begin : begin + entry["length"]]
        images[entry["name"]] = np.frombuffer(raw, dtype=np.uint8).reshape(entry["shape"])
    return header, images


def with_header(data: bytes, **changes: Any) -> bytes:
    """The same frame with some header fields replaced (the images are kept byte for byte)."""
    header, start = decode_header(data)
    header.update(changes)
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return _LEN.pack(len(head)) + head + bytes(data[start:])


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None
