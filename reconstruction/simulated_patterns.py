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

``<key>`` is a digest of the simulation's inputs, so a file never answers for another scan. One request at a time
makes a file: it holds an exclusive ``flock`` on ``<file>.lock`` beside it while it simulates and writes, and a
second request for the same file waits for it (then reads what it wrote) at most ``wait_s``, after which it raises
:class:`PatternsBeingPrepared` instead of simulating the scan a second time. Files are written whole under a
temporary name, flushed to disk and renamed, so a crash leaves the old state or the new file, never a part of one
under the file's name (a temporary file left by a crash is removed by the next maker). Without ``cache_dir``, or
when it cannot be written, nothing is kept (and nothing is locked).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputDataError, ReconstructionError

if TYPE_CHECKING:
    from .parameters import Parameters

log = logging.getLogger(__name__)

#: a noisy simulated scan is simulated again to show one of its patterns only up to this many pattern pixels
#: (N n^2): its cache file is at most 4 bytes a pixel, 256 MiB
MAX_RESIMULATED_PIXELS = 2**26
#: changes when the files' layout or the simulation's arithmetic changes (older files are then not read)
_FORMAT = 1
#: how long a request waits for another one making the same cache file before it gives up (a noisy scan of
#: 1024 x 256^2 takes 18 s to simulate on a loaded 2-core machine: a web request should not hold a worker that long)
LOCK_WAIT_S = 3.0


class PatternsBeingPrepared(ReconstructionError):
    """Another request (thread or process) is making the cache file this one needs, and did not finish within the
    wait: ask again in a few seconds."""


def simulated_pattern(params: Parameters, index: int, cache_dir: Path | None = None,
                      wait_s: float | None = None) -> np.ndarray:
    """Position ``index`` (of the whole scan, not a half set) of the scan ``params`` simulate: ``(n, n)`` float32
    counts, zero frequency at [0, 0], equal to ``simulate_from_parameters(params).data.intensities[index]``.
    ``cache_dir`` keeps what makes the next call cheap (module docstring). InputDataError for a noisy scan over
    ``MAX_RESIMULATED_PIXELS``; PatternsBeingPrepared when another request is making the cache file and has not
    finished within ``wait_s`` seconds (None: ``LOCK_WAIT_S``)."""
    wait = LOCK_WAIT_S if wait_s is None else float(wait_s)
    from .simulate import simulation_inputs

    inputs = simulation_inputs(params)
    key = _key(inputs)
    if inputs["photons"] <= 0:
        return _noise_free(inputs, int(index), key, cache_dir, wait)
    n, total = int(inputs["size_px"]), len(inputs["positions_px"])
    if total * n * n > MAX_RESIMULATED_PIXELS:
        raise InputDataError(f"the simulated scan ({total} patterns of {n} px, with noise) is too large to "
                             f"simulate again for one pattern (over {MAX_RESIMULATED_PIXELS} pattern pixels)")
    path = None if cache_dir is None else Path(cache_dir) / f"sim_patterns_{key}.npy"

    def simulate_scan() -> np.ndarray:
        from .simulate import simulate

        return simulate(**inputs).data.intensities

    def stored_form(patterns: np.ndarray) -> np.ndarray:  # uint16 when every count fits
        fits = patterns.size == 0 or float(patterns.max()) < 2**16
        return patterns.astype(np.uint16) if fits else patterns

    patterns = _cached(path, (total, n, n), simulate_scan, wait, stored_form)
    return np.array(patterns[index], dtype=np.float32)


def _noise_free(inputs: dict[str, Any], index: int, key: str, cache_dir: Path | None, wait_s: float) -> np.ndarray:
    from .positions import object_shape_for
    from .simulate import noise_free_pattern, simulated_object, simulated_probe

    positions = np.asarray(inputs["positions_px"], dtype=np.float64)
    n = int(inputs["size_px"])
    path = None if cache_dir is None else Path(cache_dir) / f"sim_object_{key}.npy"
    obj = _cached(path, object_shape_for(positions, n), lambda: simulated_object(positions, n, inputs["seed"]),
                  wait_s)
    probe = simulated_probe(n, inputs["beam_diameter_px"], inputs["photons"])
    return noise_free_pattern(np.asarray(obj), probe, positions, index)


def _key(inputs: dict[str, Any]) -> str:
    """A digest of the simulation's inputs (the positions to the bit)."""
    h = hashlib.sha256()
    scalars = {k: v for k, v in inputs.items() if k != "positions_px"}
    h.update(json.dumps([_FORMAT, scalars], sort_keys=True, default=repr).encode())
    h.update(np.ascontiguousarray(inputs["positions_px"], dtype=np.float64).tobytes())
    return h.hexdigest()[:24]


def _cached(path: Path | None, shape: tuple[int, ...], make: Callable[[], np.ndarray], wait_s: float,
            stored_form: Callable[[np.ndarray], np.ndarray] = lambda values: values) -> np.ndarray:
    """The array of ``shape`` kept at ``path`` (memory-mapped), else ``make()``'s, kept there as ``stored_form`` of
    it. One maker at a time (``_lock``): a request that waited for another reads what that one wrote."""
    stored = _read(path, shape)
    if stored is not None or path is None:
        return make() if stored is None else stored
    with _lock(path, wait_s) as held:
        if held:  # a maker that held the lock before us may have written the file meanwhile
            stored = _read(path, shape)
            if stored is not None:
                return stored
            for orphan in path.parent.glob(path.name + ".*.tmp"):  # left by a maker that crashed (only makers write)
                orphan.unlink(missing_ok=True)
        values = make()
        _write(path, stored_form(values))
        return values


@contextmanager
def _lock(path: Path, wait_s: float) -> Iterator[bool]:
    """An exclusive ``flock`` on ``<path>.lock`` for the block, waited for at most ``wait_s`` (then
    PatternsBeingPrepared). Yields False, and locks nothing, when the lock file cannot be made (an unwritable
    folder: nothing will be kept either). The lock file stays (removing it would let a waiter lock a file a newcomer
    no longer sees); it goes with the folder."""
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent / (path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PatternsBeingPrepared(
                        f"the simulated scan is being prepared by an earlier request (waited {wait_s:g} s for it): "
                        "try again in a few seconds"
                    ) from None
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)  # closing releases the lock


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
            f.flush()
            os.fsync(f.fileno())  # on disk before it takes the name: a crash then leaves no part of a file there
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        log.warning("simulated-pattern cache %s not written (%s): the next request simulates again", path, exc)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
