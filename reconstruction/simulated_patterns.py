"""One pattern of a simulated scan, as :func:`reconstruction.simulate.simulate_from_parameters` gives it, without
simulating the whole scan on every request (a finished job's diffraction panel asks for one position a click).

- Noise-free (``-photons=0``): each pattern depends on its own window only, so only that window is computed
  (:func:`reconstruction.simulate.noise_free_pattern`, bit for bit the full simulation's). The test object it
  lights takes a second at a 1,000^2 object, so it is kept in ``cache_dir`` (``sim_object_<key>.npy``, the
  object's size: 16 MB at 1448^2).
- With Poisson noise the whole scan is simulated once: the noise is one stream of draws over all the patterns
  in scan order, and a Poisson draw takes a number of uniform draws that depends on its mean, so position k's
  noise needs every pattern before it. The patterns are kept in ``cache_dir`` (``sim_patterns_<key>.npy``, uint16
  when every count fits, else float32; at most ``MAX_RESIMULATED_PIXELS`` pattern pixels, so 128 or 256 MiB) and
  read back memory-mapped: one pattern's pages, not the file.

``<key>`` is a digest of the simulation's inputs, so a file never answers for another scan. Files are written
whole under a temporary name and renamed. Without ``cache_dir``, or when it cannot be written, nothing is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputDataError

if TYPE_CHECKING:
    from .parameters import Parameters

log = logging.getLogger(__name__)

#: a noisy simulated scan is simulated again to show one of its patterns only up to this many pattern pixels
#: (N n^2): its cache file is at most 4 bytes a pixel, 256 MiB
MAX_RESIMULATED_PIXELS = 2**26
#: changes when the files' layout or the simulation's arithmetic changes (older files are then not read)
_FORMAT = 1


def simulated_pattern(params: Parameters, index: int, cache_dir: Path | None = None) -> np.ndarray:
    """Position ``index`` (of the whole scan, not a half set) of the scan ``params`` simulate: ``(n, n)`` float32
    counts, zero frequency at [0, 0], equal to ``simulate_from_parameters(params).data.intensities[index]``.
    ``cache_dir`` keeps what makes the next call cheap (module docstring). InputDataError for a noisy scan over
    ``MAX_RESIMULATED_PIXELS``."""
    from .simulate import simulation_inputs

    inputs = simulation_inputs(params)
    key = _key(inputs)
    if inputs["photons"] <= 0:
        return _noise_free(inputs, int(index), key, cache_dir)
    n, total = int(inputs["size_px"]), len(inputs["positions_px"])
    if total * n * n > MAX_RESIMULATED_PIXELS:
        raise InputDataError(f"the simulated scan ({total} patterns of {n} px, with noise) is too large to "
                             f"simulate again for one pattern (over {MAX_RESIMULATED_PIXELS} pattern pixels)")
    path = None if cache_dir is None else Path(cache_dir) / f"sim_patterns_{key}.npy"
    stored = _read(path, (total, n, n))
    if stored is not None:
        return np.asarray(stored[index], dtype=np.float32)
    from .simulate import simulate

    patterns = simulate(**inputs).data.intensities
    if path is not None:
        fits = patterns.size == 0 or float(patterns.max()) < 2**16
        _write(path, patterns.astype(np.uint16) if fits else patterns)
    return patterns[index].copy()


def _noise_free(inputs: dict[str, Any], index: int, key: str, cache_dir: Path | None) -> np.ndarray:
    from .positions import object_shape_for
    from .simulate import noise_free_pattern, simulated_object, simulated_probe

    positions = np.asarray(inputs["positions_px"], dtype=np.float64)
    n = int(inputs["size_px"])
    path = None if cache_dir is None else Path(cache_dir) / f"sim_object_{key}.npy"
    obj = _read(path, object_shape_for(positions, n))
    if obj is None:
        obj = simulated_object(positions, n, inputs["seed"])
        if path is not None:
            _write(path, obj)
    probe = simulated_probe(n, inputs["beam_diameter_px"], inputs["photons"])
    return noise_free_pattern(np.asarray(obj), probe, positions, index)


def _key(inputs: dict[str, Any]) -> str:
    """A digest of the simulation's inputs (the positions to the bit)."""
    h = hashlib.sha256()
    scalars = {k: v for k, v in inputs.items() if k != "positions_px"}
    h.update(json.dumps([_FORMAT, scalars], sort_keys=True, default=repr).encode())
    h.update(np.ascontiguousarray(inputs["positions_px"], dtype=np.float64).tobytes())
    return h.hexdigest()[:24]


def _read(path: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The array stored at ``path``, memory-mapped, if it is there and of ``shape``; else None."""
    if path is None or not path.is_file():
        return None
    try:
        stored = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("simulated-pattern cache %s cannot be read (%s): simulating again", path, exc)
        return None
    return stored if stored.shape == tuple(shape) else None


def _write(path: Path, values: np.ndarray) -> None:
    """``values`` saved at ``path`` whole or not at all (a temporary file renamed); a failure is logged only."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, values)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        log.warning("simulated-pattern cache %s not written (%s): the next request simulates again", path, exc)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
