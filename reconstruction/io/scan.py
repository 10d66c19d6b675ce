"""``Scan``: what a scan on disk is (files, dataset, counts, geometry), a quick ``inspect`` and a
completeness check for the EPICS bridge. Reads metadata and, for ``inspect``, a bounded subset of frames.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputDataError
from .hdf5_reader import DEFAULT_LOCK_WAIT_S
from .patterns import file_for_index, file_list, is_multi_file
from .positions_file import describe_source
from .scan_metadata import ScanMetadata, read_series_metadata
from .sources import open_source

if TYPE_CHECKING:
    from ..parameters import Parameters


@dataclass(frozen=True)
class Geometry:
    """Beam and detector geometry from the parameters; ``pixel_size_m`` = lambda z / (size dx_d)."""

    wavelength_m: float
    detector_distance_m: float
    detector_pixel_m: float
    size_px: int
    crop_center_px: tuple[int, int]
    pixel_size_m: float
    scan_dims: tuple[int, int]
    step_m: tuple[float, float]


@dataclass(frozen=True)
class Scan:
    """A scan on disk. ``frames`` = scanDims rows*cols; ``frame_shape``/``dtype``/``compression`` come
    from the first file (None / () when it was not opened). ``metadata`` is what the first file records
    (energy, distance, pixel size, beam centre, mask, positions, each read or left to the user; None when the
    file was not opened); ``geometry`` is what the parameters say, which the user may have given instead.
    """

    file_pattern: str
    files: tuple[Path, ...]
    dataset: str
    frames: int
    frames_per_file: int
    first_file_index: int
    frame_shape: tuple[int, int] | None
    dtype: str | None
    compression: tuple[str, ...]
    positions_source: str
    geometry: Geometry
    raw_frame_px: tuple[int, int] = (256, 256)
    metadata: ScanMetadata | None = None

    @property
    def layout(self) -> str:
        """"multi-file" (``#`` in the pattern: dpf frames per file) or "single-file"."""
        return "multi-file" if is_multi_file(self.file_pattern) else "single-file"

    @classmethod
    def from_parameters(cls, params: Parameters, *, read_metadata: bool = True,
                        wait_s: float = DEFAULT_LOCK_WAIT_S) -> Scan:
        """Describe the scan of ``params``; with ``read_metadata`` the first file is opened (read-only)
        for frame shape, dtype and compression (a missing or bad file raises :class:`InputDataError`)."""
        d, e, p = params.data, params.experiment, params.preprocessing
        if not d.file_pattern:
            raise InputDataError("no data files: set the data file pattern (-fp)")
        n = params.n_positions
        files = tuple(file_list(d.file_pattern, n, d.frames_per_file, d.first_file_index))
        geometry = Geometry(e.wavelength_m, e.detector_distance_m, e.detector_pixel_m, p.size_px,
                            p.crop_center_px, params.pixel_size_m, e.scan_dims, e.step_m)
        shape: tuple[int, int] | None = None
        dtype: str | None = None
        compression: tuple[str, ...] = ()
        metadata: ScanMetadata | None = None
        if read_metadata:
            with open_source(files[0], d.hdf5_path, d.raw_frame_px, wait_s) as src:
                shape, dtype, compression = src.frame_shape, src.dtype, src.compression
            metadata = read_series_metadata(files[0], d.hdf5_path)
        return cls(d.file_pattern, files, d.hdf5_path, n, d.frames_per_file, d.first_file_index, shape, dtype,
                   compression, describe_source(params), geometry, d.raw_frame_px, metadata)

    def location(self, scan_index: int) -> tuple[Path, int]:
        """(file, frame in file) of scan point ``scan_index``."""
        return file_for_index(self.file_pattern, scan_index, self.frames_per_file, self.first_file_index)

    def frames_needed(self) -> dict[Path, int]:
        """For each file, how many frames it must hold (the highest frame index used + 1)."""
        need: dict[Path, int] = {}
        for k in range(self.frames):
            path, frame = self.location(k)
            need[path] = max(need.get(path, 0), frame + 1)
        return need

    def wait_until_complete(self, timeout_s: float = 0.0, *, expected_frames: int | None = None,
                            first_delay_s: float = 0.1, max_delay_s: float = 2.0) -> Scan:
        """Block until every file exists, opens and holds its frames; return the scan with metadata.

        Retries with doubling delays (``first_delay_s`` .. ``max_delay_s``) until ``timeout_s`` has passed,
        then raises :class:`InputDataError` saying what is still missing. ``expected_frames`` overrides
        ``frames`` (e.g. a partial scan).
        """
        scan = self if expected_frames is None else dataclasses.replace(self, frames=int(expected_frames))
        deadline = time.monotonic() + max(timeout_s, 0.0)
        delay = first_delay_s
        while True:
            try:
                return scan._check_once()
            except InputDataError as exc:
                if time.monotonic() + delay > deadline:
                    raise InputDataError(f"scan {self.file_pattern} is not complete after {timeout_s:g} s: "
                                         f"{exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, max_delay_s)

    def _check_once(self) -> Scan:
        shape = dtype = None
        compression: tuple[str, ...] = ()
        for path, needed in self.frames_needed().items():
            with open_source(path, self.dataset, self.raw_frame_px, wait_s=0.0) as src:
                if src.frames < needed:
                    raise InputDataError(f"file {path}, dataset {self.dataset}: holds {src.frames} of "
                                         f"{needed} frames")
                src.read(needed - 1, needed, None)  # the last frame must be readable
                if shape is None:
                    shape, dtype, compression = src.frame_shape, src.dtype, src.compression
        return dataclasses.replace(self, frame_shape=shape, dtype=dtype, compression=compression)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (paths as text) for the web app and the EPICS bridge."""
        out = dataclasses.asdict(self)
        out["files"] = [str(f) for f in self.files]
        out["layout"] = self.layout
        return out


def check_complete(params: Parameters, timeout_s: float = 0.0) -> bool:
    """True once the scan of ``params`` is complete and readable; :class:`InputDataError` after
    ``timeout_s`` of retries with back-off (missing files, locked files, too few frames)."""
    Scan.from_parameters(params, read_metadata=False).wait_until_complete(timeout_s)
    return True


@dataclass(frozen=True)
class ScanInspection:
    """What ``inspect`` found. ``summed`` is the ``(H, W)`` float32 sum of the raw frames read;
    ``minimum``/``maximum``/``summed`` cover ``frames_read`` of ``frames`` frames (``subset`` when fewer)."""

    frames: int
    frame_shape: tuple[int, int]
    dtype: str
    compression: tuple[str, ...]
    minimum: float
    maximum: float
    summed: np.ndarray
    frames_read: int
    frame_indices: tuple[int, ...]

    @property
    def subset(self) -> bool:
        return self.frames_read < self.frames


def inspect(scan: Scan, max_frames: int = 32, wait_s: float = DEFAULT_LOCK_WAIT_S) -> ScanInspection:
    """Frame count, shape, dtype, compression and min/max/sum over at most ``max_frames`` evenly spread
    frames (whole raw frames; one at a time, so memory is one frame plus the ``(H, W)`` sum)."""
    indices = sorted({int(i) for i in np.linspace(0, scan.frames - 1, num=min(max_frames, scan.frames))})
    by_file: dict[Path, list[tuple[int, int]]] = {}
    for k in indices:
        path, frame = scan.location(k)
        by_file.setdefault(path, []).append((k, frame))
    summed: np.ndarray | None = None
    lo, hi = np.inf, -np.inf
    shape = dtype = None
    compression: tuple[str, ...] = ()
    for path, items in by_file.items():
        with open_source(path, scan.dataset, scan.raw_frame_px, wait_s) as src:
            if shape is None:
                shape, dtype, compression = src.frame_shape, src.dtype, src.compression
                summed = np.zeros(shape, dtype=np.float64)
            for k, frame in items:
                if frame >= src.frames:
                    raise InputDataError(f"file {path}, dataset {scan.dataset}, frame {frame} (scan point {k})"
                                         f": missing; the dataset holds {src.frames} frame(s)")
                img = src.read(frame, frame + 1, None)[0]
                finite = img[np.isfinite(img)]
                if finite.size:
                    lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
                assert summed is not None
                summed += np.where(np.isfinite(img), img, 0.0)
    assert shape is not None and dtype is not None and summed is not None
    return ScanInspection(scan.frames, shape, dtype, compression, float(lo), float(hi),
                          summed.astype(np.float32), len(indices), tuple(indices))
