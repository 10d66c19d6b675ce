"""Where a run's diffraction data live: resident on the device, streamed from pinned host memory, or refused.

Pure arithmetic on sizes (no device calls), so the decision is unit-tested on the CPU and made before any work:

>>> plan = plan_memory(250_000, 256, (2791, 64231), algorithm="ePIE", fast_gpu=True,
...                    cap_bytes=24 * 2**30, free_bytes=79 * 2**30)
>>> plan.mode, plan.chunk_positions
('streamed', 2048)

A streamed run keeps the float32 intensities (N, n, n) in host memory, pinned and mapped, and a device ring of
``RING_SLOTS`` buffers of ``chunk_positions`` amplitude patterns each (float32) that a copy stream fills with the
next chunk of the visiting order while the compute stream works on the current one (``reconstruction/gpu``).
Only the fast GPU ePIE and LSQML engines stream; DM keeps every exit wave on the device, so it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .engines.lsqml import default_batch_size

GIB = 2**30
RING_SLOTS = 2  # device buffers of one chunk each: one being read by compute, one being filled by the copy stream
EPIE_STEPS_PER_GRAPH = 2048  # ePIE per-position steps per CUDA graph, resident or streamed (one ring slot each)
STREAMING_ALGORITHMS = ("ePIE", "LSQML")
# device memory of fast ePIE's captured CUDA graphs (four to six kernel nodes a position), outside CuPy's pool:
# measured 3.5 GiB at 250,000 positions on an H100 (benchmarks/RESULTS.md, streaming section)
EPIE_GRAPH_BYTES_PER_POSITION = 16 * 2**10


def estimate_memory_bytes(n_positions: int, size_px: int, object_shape: tuple[int, int], *, algorithm: str,
                          probe_modes: int = 1, batch_size: int = 0, per_frame_mask: bool = False,
                          fast_gpu: bool = False, data_positions: int | None = None,
                          per_position_fits: bool = False, subpixel_windows: bool = False,
                          iterate_mean: bool = False) -> int:
    """Device memory a run needs (bytes): data, object/probe buffers and the engine's working set.

    ``algorithm`` is the canonical name (ePIE, DM, LSQML). ``fast_gpu``: the run uses the fused GPU engines
    (``reconstruction.gpu``), whose working sets are measured in benchmarks/RESULTS.md (peak: ePIE 1.01x, LSQML
    1.15x, DM 4.0x the intensities + object + probe; the fast LSQML's fits path holds four more exit-wave buffers
    per mini-batch position); the reference engines' NumPy/CuPy temporaries are larger
    (DM about 22x on CuPy). ``data_positions``: how many (n, n) float32 amplitude patterns are on the device
    (default all ``n_positions``; a streamed run holds only its ring). ``per_position_fits``: LSQML refines
    positions or fits per-position intensities (up to six more exit-wave-sized arrays per mini-batch position on
    the reference engine, four on the fast one). ``subpixel_windows``: windows follow sub-pixel positions (DM
    holds the moved probe of every window and its spectrum, ePIE and LSQML a few moved probes per position
    visited; the fast DM's refining epoch ends on CuPy with three more exit-wave arrays of every position).
    ``iterate_mean``: the run reports the mean of its iterates (one more object and probe: iterate_mean.py).
    """
    n2 = size_px * size_px
    held = n_positions if data_positions is None else data_positions
    data = held * n2 * 4 + (held * n2 if per_frame_mask else 0)
    obj = object_shape[0] * object_shape[1] * 8
    index = n_positions * 2 * 8
    wave = probe_modes * n2 * 8  # one position's exit waves, complex64
    mean = obj + wave if iterate_mean else 0  # the reported mean's object and probe
    if fast_gpu:
        if algorithm == "DM":  # psi (N, M, n, n) plus a chunk of far fields and the object sums
            work = n_positions * (wave + n2 * 4) + 6 * obj
            if subpixel_windows:  # every window's moved probe (gpu/window_fits.py's pj)
                work += n_positions * wave
                if per_position_fits:  # a refining epoch's end on CuPy (window_fits._end_refining_epoch): phi
                    # before and after the moves and their difference, the object's windows before and after
                    work += n_positions * (3 * wave + 2 * n2 * 8)
        elif algorithm == "LSQML":
            b = batch_size or default_batch_size(n_positions)
            work = b * 4 * wave + data // 8 + 6 * obj
            if per_position_fits or subpixel_windows:  # two more exit-wave planes, the moved probes, their
                work += b * (4 * wave + n2 * 4) + 2 * index  # gradients, Poisson intensities; positions
        else:
            work = 8 * wave + 4 * obj + n_positions * EPIE_GRAPH_BYTES_PER_POSITION
        return int(data + index + work + 4 * wave + mean)
    if algorithm == "ePIE":
        work = (12 if subpixel_windows else 8) * wave + 4 * obj
    elif algorithm == "DM":
        # psi + phi + reflected + far field per position, plus int64 window indices and object buffers
        work = n_positions * ((7 if subpixel_windows else 4) * wave + (2 if subpixel_windows else 1) * n2 * 8
                              + 2 * n2 * 4) + 6 * obj
    else:
        b = batch_size or default_batch_size(n_positions)
        fits = b * (6 * wave + n2 * 8) + 2 * index if per_position_fits or subpixel_windows else 0
        work = b * (7 * wave + n2 * 8 + 3 * n2 * 4) + 6 * obj + fits
    return int(data + index + work + 4 * wave + mean)


@dataclass(frozen=True)
class MemoryPlan:
    """The decision for one run.

    mode: "resident" (all amplitudes on the device), "streamed" (from pinned host memory through a device ring)
    or "refuse" (``message`` says why and what to do). resident_bytes / streamed_bytes: estimated device memory
    of each way (streamed_bytes None where the run cannot stream). limit_bytes: the memory the run may use (the
    smaller of the cap and the free device memory; None on the CPU). chunk_positions: patterns per ring slot of
    a streamed run (0 otherwise).
    """

    mode: str
    resident_bytes: int
    streamed_bytes: int | None
    limit_bytes: int | None
    chunk_positions: int = 0
    message: str = ""

    @property
    def needed_bytes(self) -> int:
        """What the chosen way needs (for a refusal: the least any way would need)."""
        if self.mode == "streamed" or (self.mode == "refuse" and self.streamed_bytes is not None):
            return int(self.streamed_bytes or 0)
        return self.resident_bytes


def stream_chunk_limit(algorithm: str, n_positions: int, batch_size: int = 0) -> tuple[int, int]:
    """(smallest, largest) patterns per ring slot for a streamed ``algorithm`` run: LSQML streams whole
    mini-batches (the batch size is part of the algorithm), ePIE any chunk up to ``EPIE_STEPS_PER_GRAPH``."""
    if algorithm == "LSQML":
        b = batch_size or default_batch_size(n_positions)
        b = min(b, n_positions)
        return b, b
    return 1, min(EPIE_STEPS_PER_GRAPH, n_positions)


def streamed_memory_bytes(n_positions: int, size_px: int, object_shape: tuple[int, int], *, algorithm: str,
                          chunk_positions: int, probe_modes: int = 1, batch_size: int = 0,
                          per_position_fits: bool = False, subpixel_windows: bool = False,
                          iterate_mean: bool = False) -> int:
    """Device memory (bytes) of a streamed fast-GPU run: the resident estimate with the intensities replaced by
    ``RING_SLOTS`` slots of ``chunk_positions`` float32 (n, n) amplitude patterns."""
    return estimate_memory_bytes(n_positions, size_px, object_shape, algorithm=algorithm, probe_modes=probe_modes,
                                 batch_size=batch_size, fast_gpu=True,
                                 data_positions=RING_SLOTS * chunk_positions, per_position_fits=per_position_fits,
                                 subpixel_windows=subpixel_windows, iterate_mean=iterate_mean)


def plan_memory(n_positions: int, size_px: int, object_shape: tuple[int, int], *, algorithm: str,
                probe_modes: int = 1, batch_size: int = 0, per_frame_mask: bool = False, fast_gpu: bool = False,
                cap_bytes: int = 0, free_bytes: int | None = None, per_position_fits: bool = False,
                subpixel_windows: bool = False, iterate_mean: bool = False) -> MemoryPlan:
    """Resident, streamed or refused, from the sizes alone.

    n_positions N and size_px n: the (N, n, n) intensities; object_shape (H, W) pixels; algorithm: ePIE, DM or
    LSQML; cap_bytes: the most device memory the run may use (0 = whatever is free); free_bytes: free device
    memory (None on the CPU, where the data are in host memory anyway and the run is always "resident").
    Streaming needs the fast GPU engines (``fast_gpu``), ePIE or LSQML, and no per-frame (N, n, n) mask.
    """
    resident = estimate_memory_bytes(n_positions, size_px, object_shape, algorithm=algorithm,
                                     probe_modes=probe_modes, batch_size=batch_size, per_frame_mask=per_frame_mask,
                                     fast_gpu=fast_gpu, per_position_fits=per_position_fits,
                                     subpixel_windows=subpixel_windows, iterate_mean=iterate_mean)
    if cap_bytes < 0:
        raise ValueError(f"cap_bytes={cap_bytes}: must be >= 0 (0 = whatever is free on the device)")
    if free_bytes is None:
        return MemoryPlan("resident", resident, None, None)
    limit = min(free_bytes, cap_bytes) if cap_bytes > 0 else free_bytes
    if resident <= limit:
        return MemoryPlan("resident", resident, None, limit)

    why_not = _why_not_streamed(algorithm, fast_gpu, per_frame_mask)
    streamed = None
    chunk = 0
    if why_not is None:
        lo, hi = stream_chunk_limit(algorithm, n_positions, batch_size)

        def need(c: int) -> int:
            return streamed_memory_bytes(n_positions, size_px, object_shape, algorithm=algorithm,
                                         chunk_positions=c, probe_modes=probe_modes, batch_size=batch_size,
                                         per_position_fits=per_position_fits, subpixel_windows=subpixel_windows,
                                         iterate_mean=iterate_mean)

        streamed = need(lo)
        if streamed <= limit:
            # the largest chunk that fits: the need grows linearly with the chunk
            per_pattern = max(1, need(lo + 1) - streamed) if hi > lo else 1
            chunk = min(hi, lo + (limit - streamed) // per_pattern)
            while chunk > lo and need(chunk) > limit:
                chunk -= 1
            return MemoryPlan("streamed", resident, need(chunk), limit, chunk)
    return MemoryPlan("refuse", resident, streamed, limit, 0,
                      _refusal(algorithm, resident, streamed, limit, cap_bytes, free_bytes, why_not))


def _why_not_streamed(algorithm: str, fast_gpu: bool, per_frame_mask: bool) -> str | None:
    if algorithm not in STREAMING_ALGORITHMS:
        return (f"{algorithm} keeps every exit wave on the device, so its data cannot stream from host memory: "
                f"use ePIE or LSQML, or raise the cap")
    if not fast_gpu:
        return ("only the fast GPU engines stream from host memory, and this run's plan selects the reference "
                "engine (its options, or implementation='reference')")
    if per_frame_mask:
        return ("a per-frame (N, n, n) valid mask is not streamed: use one (n, n) detector mask for all frames, "
                "or raise the cap")
    return None


def _refusal(algorithm: str, resident: int, streamed: int | None, limit: int, cap_bytes: int, free_bytes: int,
             why_not: str | None) -> str:
    limit_text = (f"the cap of {cap_bytes / GIB:.2f} GiB ({free_bytes / GIB:.2f} GiB free on the device)"
                  if cap_bytes > 0 else f"the {free_bytes / GIB:.2f} GiB free on the device")
    text = f"this {algorithm} run needs {resident / GIB:.2f} GiB of GPU memory with its data resident"
    if streamed is not None:
        text += f" and {streamed / GIB:.2f} GiB streaming them from host memory"
    text += f", more than {limit_text}"
    if why_not is not None:
        return f"{text}; {why_not}"
    if cap_bytes > 0 and cap_bytes < free_bytes:
        return f"{text}; raise the cap (-memCapGiB), use fewer positions or a smaller 'size'"
    return f"{text}; use fewer positions, a smaller 'size', or a GPU with more memory"


# -- host memory ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostMemoryPlan:
    """Host (CPU) memory of one run, planned from the sizes before anything is loaded or simulated.

    needed_bytes: the estimated peak; parts: what it is made of (name -> bytes); limit_bytes: what the run may use
    (None: not judged); message: why it is refused ("" when it fits).
    """

    needed_bytes: int
    parts: dict[str, int]
    limit_bytes: int | None
    message: str = ""

    @property
    def fits(self) -> bool:
        return not self.message


def estimate_host_bytes(n_positions: int, size_px: int, object_shape: tuple[int, int], *, algorithm: str,
                        probe_modes: int = 1, batch_size: int = 0, on_gpu: bool = False, simulate: bool = False,
                        per_position_fits: bool = False, iterate_mean: bool = False) -> dict[str, int]:
    """Peak host memory of a run, by part (bytes).

    data: the (N, n, n) float32 intensities as loaded; simulation: the complex64 far fields of a simulated scan
    (while it is made, before the run); engine: on the CPU the whole working set of the NumPy engine
    (:func:`estimate_memory_bytes`, which holds its own amplitudes beside the loaded data); on a GPU host the
    object, probe and per-position arrays kept on the host (the rest is on the device). ``iterate_mean``: the run
    reports the mean of its iterates (on the CPU one more object and probe; on a GPU they are on the device).
    """
    n2 = size_px * size_px
    parts = {"data": n_positions * n2 * 4}
    obj = object_shape[0] * object_shape[1] * 8
    probes = probe_modes * n2 * 8
    if simulate:
        parts["simulation"] = n_positions * n2 * 8 + obj + probes
    if on_gpu:
        parts["engine"] = 4 * obj + 4 * probes + n_positions * 64
    else:
        parts["engine"] = estimate_memory_bytes(n_positions, size_px, object_shape, algorithm=algorithm,
                                                probe_modes=probe_modes, batch_size=batch_size,
                                                per_position_fits=per_position_fits, iterate_mean=iterate_mean)
    return parts


def plan_host_memory(n_positions: int, size_px: int, object_shape: tuple[int, int], *, algorithm: str,
                     limit_bytes: int | None, limit_source: str = "", probe_modes: int = 1, batch_size: int = 0,
                     on_gpu: bool = False, simulate: bool = False, per_position_fits: bool = False,
                     iterate_mean: bool = False, flags: str = "-scanDims, -size or -probeModes") -> HostMemoryPlan:
    """Fits or refused, from the sizes alone (see :func:`estimate_host_bytes`).

    limit_bytes: the host memory the run may use (None: not judged); limit_source names it in the message
    ("the cap PTYCHOPY_JOB_MEMORY_GIB", "available on this worker"). The peak is the data plus the larger of the
    simulation and the engine's working set.
    """
    parts = estimate_host_bytes(n_positions, size_px, object_shape, algorithm=algorithm, probe_modes=probe_modes,
                                batch_size=batch_size, on_gpu=on_gpu, simulate=simulate,
                                per_position_fits=per_position_fits, iterate_mean=iterate_mean)
    needed = parts["data"] + max(parts.get("simulation", 0), parts["engine"])
    if limit_bytes is None or needed <= limit_bytes:
        return HostMemoryPlan(needed, parts, limit_bytes)
    detail = ", ".join(f"{name} {size / GIB:.2f} GiB" for name, size in parts.items())
    message = (f"this {algorithm} run needs about {needed / GIB:.2f} GiB of host memory ({n_positions} positions "
               f"of {size_px}x{size_px} px, {probe_modes} probe mode(s), object {object_shape[0]}x"
               f"{object_shape[1]} px: {detail}), more than the {limit_bytes / GIB:.2f} GiB allowed"
               f"{f' ({limit_source})' if limit_source else ''}; use a smaller {flags}")
    return HostMemoryPlan(needed, parts, limit_bytes, message)


def available_host_memory_bytes() -> tuple[int | None, str]:
    """(bytes this process may still allocate, where that figure comes from): the smaller of the kernel's
    MemAvailable and the room left under this process's cgroup memory limit; (None, "") where neither is known."""
    candidates: list[tuple[int, str]] = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    candidates.append((int(line.split()[1]) * 1024, "available on this host"))
                    break
    except (OSError, ValueError, IndexError):
        pass
    room = _cgroup_room_bytes()
    if room is not None:
        candidates.append((room, "left under this process's cgroup memory limit"))
    if not candidates:
        return None, ""
    return min(candidates)


def _cgroup_room_bytes() -> int | None:
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            base = f"/sys/fs/cgroup{path}"
            limit, usage = _read_int(f"{base}/memory.max"), _read_int(f"{base}/memory.current")
        elif "memory" in controllers.split(","):
            base = f"/sys/fs/cgroup/memory{path}"
            limit, usage = _read_int(f"{base}/memory.limit_in_bytes"), _read_int(f"{base}/memory.usage_in_bytes")
        else:
            continue
        if limit is not None and usage is not None and limit < 2**60:
            return max(0, limit - usage)
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None  # "max" (no limit) or no such file


def host_plan_for_parameters(params: Any, *, limit_bytes: int | None, limit_source: str = "",
                             on_gpu: bool = False) -> HostMemoryPlan:
    """:func:`plan_host_memory` for a :class:`~reconstruction.parameters.Parameters` before its data exist: N from
    -scanDims, n from -size, the object from the raster scan's extent (steps in object pixels) plus one window."""
    from .parameters.model import ALGORITHM_ALIASES
    from .run_plan import REPORTS_MEAN

    rows, cols = params.experiment.scan_dims
    n = int(params.preprocessing.size_px)
    pixel_m = float(params.pixel_size_m)
    step_r, step_c = (abs(float(s)) / pixel_m if pixel_m > 0 else 0.0 for s in params.experiment.step_m)
    shape = (int((rows - 1) * step_r) + n + 2, int((cols - 1) * step_c) + n + 2)
    r = params.reconstruction
    algorithm = ALGORITHM_ALIASES.get(str(r.algorithm).lower(), r.algorithm)
    return plan_host_memory(rows * cols, n, shape, algorithm=algorithm, limit_bytes=limit_bytes,
                            limit_source=limit_source, probe_modes=int(r.probe_modes), batch_size=int(r.batch_size),
                            on_gpu=on_gpu, simulate=bool(params.data.simulate),
                            per_position_fits=bool(r.refine_positions or r.variable_intensity),
                            iterate_mean=algorithm in REPORTS_MEAN and int(r.mean_span) > 1)
