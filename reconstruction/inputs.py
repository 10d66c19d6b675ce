"""Input checks shared by every kind of run (one device, or split over several): one set, in one place.

:func:`check_run_settings` and :func:`check_shapes` are cheap (no pass over the data) and come first, so a run the
plan refuses (:mod:`reconstruction.run_plan`) is refused before the data are read; :func:`check_values` then walks
the data in chunks (finite, non-negative, photons in every frame). Errors say what is wrong and where (frame,
pixel, position index).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engines.base import EngineSettings
from .errors import InputDataError
from .physics.modulus import NOISE_MODELS
from .physics.position_update import AFFINE_TERMS
from .positions import object_shape_for, window_corners
from .run_plan import DataSizes

REFINING_ENGINES = ("ePIE", "DM", "LSQML")  # the engines that refine positions (-refinePositions)


@dataclass
class CheckedInputs:
    """A run's host inputs after :func:`check_shapes`.

    intensities: (N, n, n) float32 C-contiguous, zero frequency at [0, 0]; positions_px: (N, 2) float64 (row,
    col); corners: (N, 2) int64 whole-pixel window corners (rounded positions); valid_mask: None (every pixel
    counts) or bool (n, n) / (N, n, n) in FFT order; object_shape: (H, W); probe_modes: the run's mode count.
    """

    intensities: np.ndarray
    positions_px: np.ndarray
    corners: np.ndarray
    valid_mask: np.ndarray | None
    object_shape: tuple[int, int]
    probe_modes: int

    @property
    def size_px(self) -> int:
        """n: the pattern (and probe window) edge, pixels."""
        return int(self.intensities.shape[-1])

    def sizes(self) -> DataSizes:
        """What the run plan needs to know of the data."""
        mask = self.valid_mask
        kind = "none" if mask is None else ("per_frame" if mask.ndim == 3 else "detector")
        return DataSizes(int(self.intensities.shape[0]), self.size_px, self.object_shape, self.probe_modes, kind)


def check_run_settings(algorithm: str, settings: EngineSettings, *, iterations: int, probe_modes: int,
                       memory_cap_bytes: int = 0) -> None:
    """ValueError naming the argument when the run's knobs cannot go together (``algorithm`` canonical)."""
    if settings.position_refinement_from > 0 and algorithm not in REFINING_ENGINES:
        raise ValueError(f"position refinement (position_refinement_from={settings.position_refinement_from},"
                         f" -refinePositions) runs with {', '.join(REFINING_ENGINES)}, not {algorithm}")
    unknown = [t for t in settings.position_affine if t not in AFFINE_TERMS]
    if unknown:
        raise ValueError(f"position_affine={settings.position_affine!r}: unknown term {unknown[0]!r}; expected "
                         f"some of {', '.join(AFFINE_TERMS)}")
    for name in ("coarse_search_px", "coarse_search_epochs", "affine_delay", "affine_epochs"):
        if getattr(settings, name) < 0:
            raise ValueError(f"{name}={getattr(settings, name)}: must be >= 0")
    if settings.noise_model not in NOISE_MODELS:
        raise ValueError(f"noise_model={settings.noise_model!r}: expected one of {', '.join(NOISE_MODELS)}")
    if iterations < 0:
        raise ValueError(f"iterations={iterations}: must be >= 0")
    if probe_modes < 1:
        raise ValueError(f"probe_modes={probe_modes}: must be >= 1")
    if memory_cap_bytes < 0:
        raise ValueError(f"memory_cap_bytes={memory_cap_bytes}: must be >= 0 (0 = whatever is free)")


def check_shapes(intensities: Any, positions_px: Any, *, valid_mask: Any = None, centred: bool = False,
                 object_shape: tuple[int, int] | None = None, probe: Any = None,
                 probe_modes: int = 1) -> CheckedInputs:
    """Shapes, dtypes and finiteness of the positions; every window inside the object. No pass over the
    intensities' values (:func:`check_values` does that). ``centred``: the patterns have zero frequency at the
    centre (shifted to [0, 0] here, mask too)."""
    intensities_h = _intensity_array(intensities, centred)
    n_pos, n = intensities_h.shape[0], intensities_h.shape[-1]
    positions = _checked_positions(positions_px, n_pos)
    corners = window_corners(positions)
    mask_h = _checked_mask(valid_mask, intensities_h.shape, centred)
    shape = tuple(object_shape) if object_shape is not None else object_shape_for(corners, n)
    shape_hw = (int(shape[0]), int(shape[1]))
    _check_inside(corners, n, shape_hw)
    return CheckedInputs(intensities_h, positions, corners, mask_h, shape_hw, _probe_mode_count(probe, probe_modes))


def check_values(inputs: CheckedInputs) -> None:
    """Intensities finite and non-negative, and photons in every frame (inside the mask); in chunks of frames."""
    _check_intensity_values(inputs.intensities)
    _check_photons(inputs.intensities, inputs.valid_mask)


def _intensity_array(intensities: Any, centred: bool) -> np.ndarray:
    """(N, n, n) float32 C-contiguous view of the intensities (one copy only where the dtype, layout or
    ``centred`` need it); checks shape and dtype, not values."""
    a = np.asarray(intensities)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[0] < 1:
        raise InputDataError(f"intensities have shape {a.shape}: expected (N, n, n) with square patterns")
    if a.shape[1] < 4:
        raise InputDataError(f"patterns of {a.shape[1]}x{a.shape[2]} pixels are too small")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InputDataError(f"intensities have dtype {a.dtype}: expected real numbers (photon counts)")
    if centred:
        return np.ascontiguousarray(np.fft.ifftshift(a, axes=(-2, -1)), dtype=np.float32)
    return np.ascontiguousarray(a, dtype=np.float32)


CHECK_CHUNK_BYTES = 256 * 2**20  # host value checks walk the data in chunks of about this size


def _frame_slices(a: np.ndarray) -> Iterator[slice]:
    """Slices of about ``CHECK_CHUNK_BYTES`` of whole frames along the first axis of ``a`` (N, ...)."""
    step = max(1, CHECK_CHUNK_BYTES // max(1, a[:1].nbytes))
    for s in range(0, a.shape[0], step):
        yield slice(s, s + step)


def _check_intensity_values(a: np.ndarray) -> None:
    """Finite and non-negative, in chunks of frames (no data-sized temporaries; errors name the first bad
    frame and pixel). ``a``: (N, n, n) float32."""
    for sl in _frame_slices(a):
        chunk, s = a[sl], sl.start
        lo, hi = chunk.min(), chunk.max()  # NaN propagates through min and max
        if np.isfinite(lo) and np.isfinite(hi) and lo >= 0:
            continue
        finite = np.isfinite(chunk)
        if not finite.all():
            j, r, c = (int(v) for v in np.argwhere(~finite)[0])
            raise InputDataError(f"intensities contain NaN or infinite values (first at frame {s + j}, pixel "
                                 f"({r}, {c}))")
        j, r, c = (int(v) for v in np.argwhere(chunk < 0)[0])
        raise InputDataError(f"intensities contain negative values (first at frame {s + j}, pixel ({r}, {c}), "
                             f"value {chunk[j, r, c]:g}); subtract backgrounds with a threshold instead")


def _probe_mode_count(probe: Any, probe_modes: int) -> int:
    """Modes of the run: ``probe_modes``, or more when the probe guess holds more."""
    if probe is None:
        return int(probe_modes)
    shape = np.shape(probe)
    return max(int(probe_modes), int(shape[0])) if len(shape) == 3 else int(probe_modes)


def _checked_positions(positions_px: Any, n_positions: int) -> np.ndarray:
    """(N, 2) float64 positions, checked for shape and finiteness."""
    p = np.asarray(positions_px, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise InputDataError(f"positions_px has shape {p.shape}: expected (N, 2) (row, col)")
    if p.shape[0] != n_positions:
        raise InputDataError(f"{p.shape[0]} positions for {n_positions} diffraction patterns")
    if not np.all(np.isfinite(p)):
        raise InputDataError(f"position {int(np.argwhere(~np.isfinite(p))[0, 0])} is NaN or infinite")
    return p


def _check_inside(corners: np.ndarray, n: int, shape: tuple[int, int]) -> None:
    bad = (corners[:, 0] < 0) | (corners[:, 1] < 0) | (corners[:, 0] + n > shape[0]) | (corners[:, 1] + n > shape[1])
    if bad.any():
        j = int(np.argwhere(bad)[0, 0])
        raise InputDataError(
            f"position {j} at (row {corners[j, 0]}, col {corners[j, 1]}) puts its {n}x{n} window outside the "
            f"object array of shape {shape}")


def _checked_mask(mask: Any, shape: tuple[int, ...], centred: bool) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask).astype(bool)
    if m.shape not in (shape[1:], shape):
        raise InputDataError(f"valid_mask has shape {m.shape}: expected {shape[1:]} or {shape}")
    if centred:
        m = np.fft.ifftshift(m, axes=(-2, -1))
    return None if m.all() else m


def _check_photons(intensities: np.ndarray, mask: np.ndarray | None) -> None:
    totals = np.empty(intensities.shape[0], dtype=np.float64)
    for sl in _frame_slices(intensities):
        chunk = intensities[sl]
        if mask is not None:
            chunk = np.where(mask if mask.ndim == 2 else mask[sl], chunk, 0)
        totals[sl] = chunk.sum(axis=(-2, -1))
    empty = np.flatnonzero(totals <= 0)
    if empty.size:
        listed = ", ".join(str(int(j)) for j in empty[:10]) + (" ..." if empty.size > 10 else "")
        raise InputDataError(f"{empty.size} frame(s) hold no photons (frames {listed}); check the data, the crop "
                             f"centre or the threshold")


def initial_object(xp: Any, shape: tuple[int, int], guess: Any) -> Any:
    """(H, W) complex64 unit transmission on ``xp`` with ``guess`` (a finite 2-D array) pasted centred."""
    obj = xp.ones(shape, dtype=xp.complex64)
    if guess is None:
        return obj
    g = np.asarray(guess)
    if g.ndim != 2 or not np.all(np.isfinite(g)):
        raise InputDataError(f"object guess has shape {g.shape} or non-finite values: expected a finite 2-D array")
    h, w = min(g.shape[0], shape[0]), min(g.shape[1], shape[1])
    gy, gx = (g.shape[0] - h) // 2, (g.shape[1] - w) // 2
    oy, ox = (shape[0] - h) // 2, (shape[1] - w) // 2
    obj[oy:oy + h, ox:ox + w] = xp.asarray(g[gy:gy + h, gx:gx + w].astype(np.complex64))
    return obj
