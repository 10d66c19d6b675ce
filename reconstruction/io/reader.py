"""``read_scan``: stream a scan's files through cropping and preprocessing into a :class:`ScanData`.

Frames are read in chunks of at most ``max_buffer_bytes`` (only the crop window's hyperslab; rounded up to
whole HDF5 chunks when a chunk spans several frames), preprocessed, and written into the preallocated
``(N, n, n)`` float32 stack, so peak memory is about that stack plus a few chunk buffers, whatever the size
of the raw detector frames or files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputDataError
from .errors import where
from .hdf5_reader import DEFAULT_LOCK_WAIT_S
from .masks import beamstop_path, read_bad_pixel_mask, read_beamstop_mask
from .patterns import file_for_index, is_multi_file
from .positions_file import check_count, describe_source, read_positions_file
from .preprocess import CropWindow, Preprocessing, beamstop_valid, prepare_mask, preprocess_frames, rotate90
from .sources import FrameSource, open_source

if TYPE_CHECKING:
    from ..parameters import Parameters
    from ..scan_data import ScanData

DEFAULT_BUFFER_BYTES = 32 * 2**20
Progress = Callable[[int, int], None]


def frame_groups(params: Parameters, n_frames: int) -> Iterator[tuple[Path, int, int, int]]:
    """(file, first scan index, frame in file of that index, count) runs of consecutive scan points."""
    d = params.data
    k = 0
    while k < n_frames:
        path, frame = file_for_index(d.file_pattern, k, d.frames_per_file, d.first_file_index)
        left = n_frames - k
        count = min(d.frames_per_file - frame, left) if is_multi_file(d.file_pattern) else left
        yield path, k, frame, count
        k += count


def preprocessing_of(params: Parameters, frame_shape: tuple[int, int]) -> Preprocessing:
    """The :class:`Preprocessing` steps of ``params`` for raw frames of ``frame_shape`` (rows, cols)."""
    p = params.preprocessing
    window = CropWindow.around(p.crop_center_px, p.size_px, frame_shape)
    return Preprocessing(window, p.rotate90, p.bit_depth, p.threshold, p.sqrt_data, p.fft_shift_data)


def static_valid_mask(params: Parameters, steps: Preprocessing, frame_shape: tuple[int, int]) -> np.ndarray:
    """``(n, n)`` bool: pixels inside the detector, not bad (``-mask``), not behind the beamstop."""
    on_detector = np.ones(frame_shape, dtype=bool)
    valid = prepare_mask(on_detector, steps, frame_shape)
    p = params.preprocessing
    if p.bad_pixel_mask:
        bad = read_bad_pixel_mask(p.bad_pixel_mask)
        valid &= prepare_mask(~bad, steps, frame_shape)
    if p.beamstop_mask:
        stop = read_beamstop_mask(beamstop_path(params.data.file_pattern), params.data.hdf5_path)
        valid &= prepare_mask(beamstop_valid(stop), steps, frame_shape)
    return valid


def positions_m_of(params: Parameters, first_file: Path | None, n_frames: int) -> np.ndarray:
    """(N, 2) metres from ``-lf`` (CSV / HDF5) or the raster/spiral of the parameters."""
    spec = params.experiment.positions_file
    if spec:
        pos = read_positions_file(spec, first_file)
        check_count(pos, n_frames, spec)
        return pos
    from ..positions import positions_m_from_parameters

    return positions_m_from_parameters(params)


def positions_px_of(params: Parameters, positions_m: np.ndarray) -> np.ndarray:
    """Metres -> pixels (row, col) with ``lambda z / (size dx_d)``; jitter as the parameters say."""
    from ..positions import metres_to_pixels

    seed = params.reconstruction.seed
    rng = np.random.default_rng(None if seed < 0 else seed)
    return metres_to_pixels(positions_m, params.pixel_size_m,
                            jitter_radius_px=params.experiment.jitter_radius_px, rng=rng)


def frames_per_read(src: FrameSource, budget_frames: int, first_frame: int) -> int:
    """Frames per read: ``budget_frames``, rounded to whole HDF5 chunks when a chunk spans several frames
    and the reads start on a chunk boundary (so each compressed chunk is decompressed once)."""
    chunks = getattr(src, "chunks", None)
    per_chunk = int(chunks[0]) if chunks and len(chunks) == 3 else 1
    if per_chunk <= 1 or first_frame % per_chunk:
        return budget_frames
    return max(per_chunk, budget_frames // per_chunk * per_chunk)


def _check_source(src: FrameSource, first: FrameSource | None, frame: int, count: int, k: int,
                  dpf: int, multi: bool) -> None:
    if first is not None and src.frame_shape != first.frame_shape:
        raise InputDataError(f"{where(src.path, src.dataset)}: frames are {src.frame_shape[0]}x"
                             f"{src.frame_shape[1]} px but {first.path} has {first.frame_shape[0]}x"
                             f"{first.frame_shape[1]} px")
    if frame + count > src.frames:
        missing = max(frame, src.frames)
        why = (f"holds {src.frames} frame(s); the scan needs {frame + count} from this file "
               f"(-dpf={dpf})" if multi else f"holds {src.frames} frame(s); the scan needs {count} "
               f"(-scanDims rows*cols)")
        raise InputDataError(f"{where(src.path, src.dataset, missing, k + missing - frame)}: missing; "
                             f"the dataset {why}")


def read_scan(params: Parameters, progress: Progress | None = None, *,
              max_buffer_bytes: int = DEFAULT_BUFFER_BYTES, wait_s: float = DEFAULT_LOCK_WAIT_S) -> ScanData:
    """Read and preprocess the scan the parameters describe -> :class:`ScanData`.

    intensities ``(N, n, n)`` float32 counts with zero frequency at [0, 0], N = scanDims rows*cols;
    positions_px ``(N, 2)``; valid_mask ``(n, n)`` or, when some frame has saturated pixels, ``(N, n, n)``.
    ``progress(done, total)`` is called after every chunk. Input problems raise :class:`InputDataError`
    naming the file, dataset and frame. Files are opened read-only.
    """
    from ..scan_data import ScanData

    d = params.data
    if not d.file_pattern:
        raise InputDataError("no data files: set the data file pattern (-fp) or -simulate=1")
    n_frames = params.n_positions
    multi = is_multi_file(d.file_pattern)
    first_path = file_for_index(d.file_pattern, 0, d.frames_per_file, d.first_file_index)[0]
    positions_m = positions_m_of(params, first_path, n_frames)
    n = params.preprocessing.size_px
    intensities = np.empty((n_frames, n, n), dtype=np.float32)
    per_frame: np.ndarray | None = None
    static: np.ndarray | None = None
    steps: Preprocessing | None = None
    first: FrameSource | None = None
    files: list[str] = []
    chunk = max(1, int(max_buffer_bytes) // (n * n * 4))
    buffer = np.empty((0, n, n), dtype=np.float32)
    done = 0
    for path, k0, frame0, count in frame_groups(params, n_frames):
        src = open_source(path, d.hdf5_path, d.raw_frame_px, wait_s)
        try:
            _check_source(src, first, frame0, count, k0, d.frames_per_file, multi)
            if steps is None:
                steps = preprocessing_of(params, src.frame_shape)
                static = static_valid_mask(params, steps, src.frame_shape)
            assert static is not None
            files.append(str(path))
            step = frames_per_read(src, chunk, frame0)
            if buffer.shape[0] < min(step, count):
                buffer = np.empty((min(step, count), n, n), dtype=np.float32)
            for j in range(0, count, step):
                c = min(step, count - j)
                raw = src.read(frame0 + j, frame0 + j + c, steps.window, buffer[:c])
                _check_finite(raw, static, steps, src, frame0 + j, k0 + j)
                data, ok = preprocess_frames(raw, steps)
                intensities[k0 + j:k0 + j + c] = data
                if per_frame is None and not (ok | ~static).all():
                    per_frame = np.empty((n_frames, n, n), dtype=bool)
                    per_frame[:] = static
                if per_frame is not None:
                    per_frame[k0 + j:k0 + j + c] = ok & static
                done += c
                if progress is not None:
                    progress(done, n_frames)
        finally:
            if first is None:
                first = src
            src.close()
    assert static is not None
    valid = per_frame if per_frame is not None else static
    source = {
        "file_pattern": d.file_pattern, "files": files, "dataset": d.hdf5_path, "frames": n_frames,
        "layout": "multi-file" if multi else "single-file", "positions": describe_source(params),
        "bad_pixel_mask": params.preprocessing.bad_pixel_mask or None,
        "beamstop_mask": str(beamstop_path(d.file_pattern)) if params.preprocessing.beamstop_mask else None,
    }
    return ScanData(
        intensities=intensities, positions_px=positions_px_of(params, positions_m),
        valid_mask=None if valid.all() else valid, pixel_size_m=params.pixel_size_m, source=source,
    )


def read_frame(params: Parameters, index: int, *, wait_s: float = DEFAULT_LOCK_WAIT_S) -> np.ndarray:
    """Scan point ``index``'s pattern as :func:`read_scan` gives it: ``(n, n)`` float32 counts, zero frequency at
    [0, 0], through the same crop and preprocessing, reading that one frame only. :class:`InputDataError` naming
    the file and frame when it cannot be read; ValueError for an index outside 0..N-1."""
    d = params.data
    if not d.file_pattern:
        raise InputDataError("no data files: set the data file pattern (-fp) or -simulate=1")
    if not 0 <= int(index) < params.n_positions:
        raise ValueError(f"scan point {index}: the scan has points 0..{params.n_positions - 1}")
    path, frame = file_for_index(d.file_pattern, int(index), d.frames_per_file, d.first_file_index)
    src = open_source(path, d.hdf5_path, d.raw_frame_px, wait_s)
    try:
        steps = preprocessing_of(params, src.frame_shape)
        raw = src.read(frame, frame + 1, steps.window)
    finally:
        src.close()
    return preprocess_frames(raw, steps)[0][0]


def _check_finite(raw: np.ndarray, static: np.ndarray, steps: Preprocessing, src: FrameSource,
                  frame0: int, k0: int) -> None:
    """Non-finite values are allowed only where the masks already drop the pixel."""
    finite = np.isfinite(raw)
    if finite.all():
        return
    valid_raw = static
    if steps.fft_shift_data:
        valid_raw = np.fft.fftshift(valid_raw, axes=(-2, -1))
    valid_raw = rotate90(valid_raw, -steps.rotate90)
    bad = ~finite & valid_raw
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0])
        count = int(bad[i].sum())
        raise InputDataError(
            f"{where(src.path, src.dataset, frame0 + i, k0 + i)}: {count} NaN/inf value(s) inside the crop "
            f"window; mark those pixels bad with -mask (they are then ignored) or fix the data"
        )
