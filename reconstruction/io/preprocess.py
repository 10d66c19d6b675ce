"""Diffraction preprocessing as pure functions on NumPy arrays, in the original's order.

Order (per frame): crop ``size`` x ``size`` around ``qxy`` (zero padded where the window leaves the
detector) -> ``rotate90`` -> validity masks (saturation from ``bitDepth``/``threshold``, beamstop, bad
pixels) -> ``threshold`` -> intensities (square amplitudes unless ``sqrtData``) -> ``fftShiftData``.
Arrays are ``(..., rows, cols)``; every function works on one frame ``(H, W)`` or a stack ``(k, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputDataError


@dataclass(frozen=True)
class CropWindow:
    """A ``size_px`` x ``size_px`` window with top-left corner ``(row0_px, col0_px)`` in detector pixels.

    The window may extend past the detector (those pixels read as 0); ``clip`` gives the part inside.
    """

    row0_px: int
    col0_px: int
    size_px: int

    @classmethod
    def around(cls, center_px: tuple[int, int], size_px: int, frame_shape: tuple[int, int]) -> CropWindow:
        """The original's window: rows [r - size//2, r - size//2 + size), likewise columns.

        A frame already ``size`` x ``size`` is used whole (the original ignored ``qxy`` then). A window
        with no pixel on the detector raises :class:`InputDataError`.
        """
        rows, cols = int(frame_shape[0]), int(frame_shape[1])
        if (rows, cols) == (size_px, size_px):
            return cls(0, 0, size_px)
        r, c = int(center_px[0]), int(center_px[1])
        win = cls(r - size_px // 2, c - size_px // 2, size_px)
        if win.clip((rows, cols)) is None:
            raise InputDataError(
                f"crop window of {size_px}x{size_px} px around -qxy={r},{c} lies entirely outside the "
                f"{rows}x{cols} px detector frame"
            )
        return win

    def clip(self, frame_shape: tuple[int, int]) -> tuple[slice, slice, slice, slice] | None:
        """(src_rows, src_cols, dst_rows, dst_cols) slices of the overlap with a frame; None if none."""
        rows, cols = int(frame_shape[0]), int(frame_shape[1])
        r0, c0, n = self.row0_px, self.col0_px, self.size_px
        sr0, sr1 = max(r0, 0), min(r0 + n, rows)
        sc0, sc1 = max(c0, 0), min(c0 + n, cols)
        if sr0 >= sr1 or sc0 >= sc1:
            return None
        return (slice(sr0, sr1), slice(sc0, sc1), slice(sr0 - r0, sr1 - r0), slice(sc0 - c0, sc1 - c0))

    def is_partial(self, frame_shape: tuple[int, int]) -> bool:
        """True when part of the window lies outside the frame (and is zero padded)."""
        clip = self.clip(frame_shape)
        return clip is None or (clip[0].stop - clip[0].start, clip[1].stop - clip[1].start) != (
            self.size_px, self.size_px)


def crop(frames: np.ndarray, window: CropWindow, fill: float | bool = 0) -> np.ndarray:
    """Cut ``window`` out of ``frames`` ``(..., H, W)`` -> ``(..., size, size)``; outside pixels = ``fill``."""
    out = np.full(frames.shape[:-2] + (window.size_px, window.size_px), fill, dtype=frames.dtype)
    clip = window.clip(frames.shape[-2:])
    if clip is not None:
        sr, sc, dr, dc = clip
        out[..., dr, dc] = frames[..., sr, sc]
    return out


def rotate90(frames: np.ndarray, times: int) -> np.ndarray:
    """Rotate each frame by 90 degrees ``times`` times, counter-clockwise as ``numpy.rot90``."""
    times %= 4
    if times == 0:
        return frames
    return np.ascontiguousarray(np.rot90(frames, k=times, axes=(-2, -1)))


def saturation_level(bit_depth: int, threshold: float) -> float:
    """Counts at or above which a pixel is saturated: ``2**bit_depth - 1 - threshold``."""
    return float(2.0 ** bit_depth - 1.0 - threshold)


def unsaturated(frames: np.ndarray, bit_depth: int, threshold: float) -> np.ndarray:
    """Boolean ``(..., H, W)``: True where the raw value is below the saturation level (NaN -> True)."""
    level = saturation_level(bit_depth, threshold)
    with np.errstate(invalid="ignore"):
        return ~(frames >= level)


def beamstop_valid(mask: np.ndarray) -> np.ndarray:
    """Boolean: True where a beamstop transmission mask is >= 0.99 (the original's floating rule)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(mask, dtype=np.float64) >= 0.99


def apply_threshold(frames: np.ndarray, threshold: float) -> np.ndarray:
    """The original's documented threshold: non-finite -> 0; v < threshold -> 0; else v - threshold.

    Returns a new float32 array; with ``threshold == 0`` this zeroes non-finite and negative values.
    """
    out = np.array(frames, dtype=np.float32, copy=True)
    out[~np.isfinite(out)] = 0.0
    below = out < threshold
    if threshold:
        out -= np.float32(threshold)
    out[below] = 0.0
    return out


def to_intensity(frames: np.ndarray, sqrt_data: bool) -> np.ndarray:
    """Photon counts from the file values: kept with ``sqrt_data`` (files hold intensities), else squared.

    Without ``sqrtData`` the original fed the values to the modulus constraint as amplitudes, so we
    square them; with it, the files hold counts, which are what :class:`ScanData` carries.
    """
    if sqrt_data:
        return frames.astype(np.float32, copy=False)
    return np.square(frames, dtype=np.float32)


def fft_shift(frames: np.ndarray) -> np.ndarray:
    """Move the zero frequency from the centre (``n // 2``) to ``[0, 0]`` of each frame (ifftshift)."""
    return np.fft.ifftshift(frames, axes=(-2, -1))


@dataclass(frozen=True)
class Preprocessing:
    """The preprocessing settings of one scan, taken from the parameters."""

    window: CropWindow
    rotate90: int = 0
    bit_depth: int = 32
    threshold: float = 0.0
    sqrt_data: bool = False
    fft_shift_data: bool = False

    @property
    def size_px(self) -> int:
        return self.window.size_px


def prepare_mask(mask: np.ndarray, steps: Preprocessing, frame_shape: tuple[int, int]) -> np.ndarray:
    """A detector-frame boolean mask (True = valid) taken through crop, rotation and shift -> (n, n).

    Pixels of the window outside the detector are invalid (they carry no measurement). A mask already
    ``(n, n)`` (and a frame that is not) is taken as cropped: only rotated and shifted.
    """
    mask = np.asarray(mask, dtype=bool)
    n = steps.size_px
    if mask.shape == tuple(frame_shape):
        out = crop(mask, steps.window, fill=False)
    elif mask.shape == (n, n):
        out = mask.copy()
    else:
        raise InputDataError(f"mask of shape {mask.shape} matches neither the detector frame "
                             f"{tuple(frame_shape)} nor the pattern size ({n}, {n})")
    out = rotate90(out, steps.rotate90)
    return fft_shift(out) if steps.fft_shift_data else out


def preprocess_frames(cropped: np.ndarray, steps: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Cropped raw frames ``(k, n, n)`` -> (intensities ``(k, n, n)`` float32, unsaturated ``(k, n, n)`` bool).

    Runs rotate90 -> saturation test on the raw values -> threshold -> intensities -> fftshift.
    """
    frames = rotate90(cropped, steps.rotate90)
    ok = unsaturated(frames, steps.bit_depth, steps.threshold)
    data = to_intensity(apply_threshold(frames, steps.threshold), steps.sqrt_data)
    if steps.fft_shift_data:
        data, ok = fft_shift(data), fft_shift(ok)
    return np.ascontiguousarray(data, dtype=np.float32), ok


def preprocess_into(raw: np.ndarray, steps: Preprocessing, out: np.ndarray, scratch: np.ndarray | None = None
                    ) -> np.ndarray:
    """:func:`preprocess_frames`' intensities of raw frames ``(k, H, W)`` written into ``out`` ``(k, n, n)``
    float32 (a live run's staging buffer) without allocating a frame-sized array: crop, threshold and squaring
    run in place; ``-fftShiftData`` needs ``scratch`` (>= k frames, float32) to shift out of; ``-rotate90`` falls
    back to :func:`preprocess_frames` (one allocation per call). The saturation mask is not made. Returns ``out``.
    """
    k, n = raw.shape[0], steps.size_px
    if steps.rotate90 % 4:
        out[...] = preprocess_frames(crop(raw, steps.window), steps)[0]
        return out
    if steps.fft_shift_data and (scratch is None or scratch.shape[0] < k):
        raise ValueError(f"preprocess_into: -fftShiftData needs a scratch buffer of at least {k} frames")
    work = scratch[:k] if steps.fft_shift_data and scratch is not None else out
    clip = steps.window.clip(raw.shape[-2:])
    if clip is None or steps.window.is_partial(raw.shape[-2:]):
        work.fill(0.0)
    if clip is not None:
        sr, sc, dr, dc = clip
        np.copyto(work[:, dr, dc], raw[:, sr, sc], casting="unsafe")
    threshold = np.float32(steps.threshold)
    if threshold:
        np.subtract(work, threshold, out=work)
    np.maximum(work, 0.0, out=work)  # v < threshold -> 0 (v - threshold < 0); -inf -> 0
    for j in np.flatnonzero(~np.isfinite(work.reshape(k, -1).sum(axis=1))):
        work[j][~np.isfinite(work[j])] = 0.0  # NaN, +inf -> 0 as apply_threshold (searched in such frames only)
    if not steps.sqrt_data:
        np.square(work, out=work)
    if steps.fft_shift_data:  # ifftshift: out[i] = work[(i + n // 2) % n] on both axes, four block copies
        s, t = n // 2, n - n // 2
        out[:, :t, :t] = work[:, s:, s:]
        out[:, :t, t:] = work[:, s:, :s]
        out[:, t:, :t] = work[:, :s, s:]
        out[:, t:, t:] = work[:, :s, :s]
    return out
