"""The run plan: how a reconstruction runs, decided once before any work, with the reason for each choice.

:func:`plan_run` is the one place that decides, from the engine settings, the data's sizes and the device:

- **implementation**: ``"fast"`` (the fused CuPy engines of ``reconstruction/gpu``) or ``"reference"`` (the
  NumPy/CuPy engines of ``reconstruction/engines``, the specification);
- **residency**: ``"resident"`` (all amplitudes on the device), ``"streamed"`` (from pinned host memory through a
  device ring) or ``"refused"`` (does not fit; :mod:`reconstruction.memory_plan` does the arithmetic);
- **devices**: one device, or split over several (``-gpus``), with the exchange that keeps the regions one
  reconstruction (``"sums"`` for DM, ``"periodic"`` for ePIE and LSQML).

>>> from reconstruction.engines import EngineSettings
>>> plan = plan_run("LSQML", EngineSettings(), DataSizes(900, 256, (900, 900)), backend="gpu",
...                 free_bytes=79 * 2**30)
>>> plan.implementation, plan.residency, plan.split
('fast', 'resident', False)

Pure (no device calls, no environment): the same inputs give the same plan on any machine, so every decision is
unit-tested on the CPU. Which options the fast path implements is one table, :data:`FAST_PATH_SUPPORTS`. The
reference engines implement the options of :data:`RUN_OPTIONS` (the flux fit and the Poisson model of ePIE and DM
too: engines/epie.py, dm.py; DM's affine fit adds a smooth cubic warp of the scan), so a GPU run with an option its
fast engine lacks takes the reference engine, on the GPU, and the plan's reason names the option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import memory_plan
from .engines.base import EngineSettings
from .memory_plan import GIB, MemoryPlan

IMPLEMENTATION_CHOICES = ("auto", "fast", "reference")
EXCHANGES = ("auto", "sums", "periodic")

#: Every option of a run that the fast path may or may not implement: name -> how a user asks for it.
RUN_OPTIONS: dict[str, str] = {
    "rms_metric": "the RMS metric (-RMS)",
    "position_refinement": "position refinement (-refinePositions)",
    "position_affine": "a free affine fit of the scan (-positionAffine)",
    "coarse_search": "the coarse whole-pixel position search",
    "variable_intensity": "the per-position flux fit (-variableIntensity)",
    "poisson_noise": "the Poisson noise model (-noise=poisson)",
    "valid_mask": "a valid-pixel mask",
    "probe_modes": "several probe modes (-probeModes)",
    "subpixel_windows": "sub-pixel windows (-subpixelWindows)",
}

#: The capability table: per algorithm, the options of :data:`RUN_OPTIONS` its fast GPU engine implements.
#: A run that uses any other option runs the reference engine (the plan's reason names the options).
#: Extend an entry here, and only here, when a fast engine learns an option (and test it in tests/gpu).
FAST_PATH_SUPPORTS: dict[str, frozenset[str]] = {
    "ePIE": frozenset({"valid_mask", "probe_modes", "subpixel_windows", "position_refinement", "position_affine",
                       "coarse_search", "variable_intensity", "poisson_noise"}),
    "DM": frozenset({"valid_mask", "probe_modes", "subpixel_windows", "position_refinement", "position_affine",
                     "coarse_search", "variable_intensity", "poisson_noise"}),
    "LSQML": frozenset({"valid_mask", "probe_modes", "subpixel_windows", "position_refinement", "variable_intensity",
                        "poisson_noise"}),
}


#: The algorithms whose runs report the mean of their iterates (``-meanSpan`` > 1; reconstruction/iterate_mean.py):
#: LSQML's mini-batches jitter about the solution; ePIE's mean was worse early, DM has no mini-batch noise.
REPORTS_MEAN = frozenset({"LSQML"})


@dataclass(frozen=True)
class DataSizes:
    """The sizes of a run's data: N patterns of size_px x size_px, the (H, W) object, the probe modes, and the
    valid mask: ``"none"``, ``"detector"`` (one (n, n) mask) or ``"per_frame"`` (N, n, n)."""

    n_positions: int
    size_px: int
    object_shape: tuple[int, int]
    probe_modes: int = 1
    mask: str = "none"

    def __post_init__(self) -> None:
        if self.mask not in ("none", "detector", "per_frame"):
            raise ValueError(f"mask={self.mask!r}: expected 'none', 'detector' or 'per_frame'")


@dataclass(frozen=True)
class RunPlan:
    """How one run goes, and why (each ``*_reason`` is one sentence for logs, the CLI, the job page, the file).

    algorithm: ePIE, DM or LSQML. backend: "cpu" or "gpu". implementation: "fast" or "reference".
    residency: "resident", "streamed", "refused" or, for a split run before its regions are planned,
    "per region". split: True when the run is cut into regions over ``devices`` (GPU indices or CPU labels);
    exchange: "" (one device), "sums" or "periodic". memory: the memory arithmetic (None for a split run: each
    region has its own). options: the options of :data:`RUN_OPTIONS` the run uses. iterate_mean: the run reports
    the mean of its iterates (``-meanSpan``; each region of a split run decides for itself).
    """

    algorithm: str
    backend: str
    implementation: str
    implementation_reason: str
    residency: str
    residency_reason: str
    split: bool
    devices: tuple[int, ...]
    devices_reason: str
    exchange: str = ""
    options: tuple[str, ...] = ()
    memory: MemoryPlan | None = field(default=None, compare=False)
    iterate_mean: bool = False
    iterate_mean_reason: str = ""

    @property
    def refused(self) -> bool:
        return self.residency == "refused"

    def summary_lines(self) -> list[str]:
        """Two lines for a terminal: what runs where, then why."""
        where = (f"split over {len(self.devices)} {'GPUs' if self.backend == 'gpu' else 'CPU regions'} "
                 f"({self.exchange} exchange)" if self.split else f"one {self.backend.upper()}")
        mean = f"; {self.iterate_mean_reason}" if self.iterate_mean_reason else ""
        return [f"run plan: {self.implementation} {self.algorithm}, data {self.residency}, {where}",
                f"  because: {self.implementation_reason}; {self.residency_reason}; {self.devices_reason}{mean}"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (for the result file and the job row); the memory figures in bytes."""
        out = {k: v for k, v in asdict(self).items() if k != "memory"}
        out["devices"] = list(self.devices)
        out["options"] = list(self.options)
        m = self.memory
        out["needed_bytes"] = None if m is None else int(m.needed_bytes)
        out["limit_bytes"] = None if m is None else m.limit_bytes
        out["chunk_positions"] = 0 if m is None else int(m.chunk_positions)
        return out


def run_options(algorithm: str, settings: EngineSettings, *, probe_modes: int = 1,
                mask: str = "none") -> tuple[str, ...]:
    """The options of :data:`RUN_OPTIONS` a run of ``algorithm`` with ``settings`` uses, in table order."""
    used = {
        "rms_metric": settings.compute_rms,
        "position_refinement": settings.position_refinement_from > 0,
        "position_affine": settings.position_refinement_from > 0 and bool(settings.position_affine),
        "coarse_search": (settings.position_refinement_from > 0 and settings.coarse_search_px > 0
                          and settings.coarse_search_epochs > 0),
        "variable_intensity": settings.variable_intensity,
        "poisson_noise": settings.noise_model != "gaussian",
        "valid_mask": mask != "none",
        "probe_modes": probe_modes > 1,
        "subpixel_windows": settings.subpixel_windows,
    }
    return tuple(name for name in RUN_OPTIONS if used[name])


def splits(devices: Sequence[int]) -> bool:
    """True when a run over ``devices`` (``-gpus``) is cut into regions: two or more entries."""
    return len(devices) > 1


def exchange_for(algorithm: str, exchange: str = "auto") -> str:
    """The exchange of a split ``algorithm`` run: "sums" (DM's overlap sums, all-reduced every iteration) or
    "periodic" (ePIE, LSQML: object and probe averaged every few iterations); "auto" picks by algorithm."""
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange={exchange!r}: expected one of {', '.join(EXCHANGES)}")
    if exchange == "auto":
        return "sums" if algorithm == "DM" else "periodic"
    if exchange == "sums" and algorithm != "DM":
        raise ValueError(f"exchange='sums' needs DM (its overlap projection is a sum); {algorithm} uses 'periodic'")
    return exchange


def plan_run(algorithm: str, settings: EngineSettings, sizes: DataSizes, *, backend: str,
             free_bytes: int | None = None, memory_cap_bytes: int = 0, devices: Sequence[int] = (),
             implementation: str = "auto", exchange: str = "auto", split: bool | None = None) -> RunPlan:
    """The plan of one run.

    algorithm: the canonical name (ePIE, DM, LSQML); settings: its engine knobs; sizes: its data; backend:
    "cpu" (NumPy) or "gpu" (CuPy); free_bytes: free memory of the device (None: host memory, no limit);
    memory_cap_bytes: the most device memory the run may use (0 = whatever is free); devices: the devices to
    split over (``-gpus``; fewer than two = one device); implementation: "auto" (fast where it implements the
    run's options, else reference), "fast" (ValueError where it cannot) or "reference"; exchange: of a split run;
    split: None decides by :func:`splits` (two or more devices), True plans regions even over one device (a
    :class:`~reconstruction.multigpu.SplitReconstruction` built directly).
    """
    if backend not in ("cpu", "gpu"):
        raise ValueError(f"backend={backend!r}: expected 'cpu' or 'gpu'")
    if algorithm not in FAST_PATH_SUPPORTS:
        raise ValueError(f"algorithm={algorithm!r}: expected one of {', '.join(FAST_PATH_SUPPORTS)}")
    if implementation not in IMPLEMENTATION_CHOICES:
        raise ValueError(f"implementation={implementation!r}: expected one of {', '.join(IMPLEMENTATION_CHOICES)}")
    options = run_options(algorithm, settings, probe_modes=sizes.probe_modes, mask=sizes.mask)
    split = splits(devices) if split is None else bool(split)
    if split and not devices:
        raise ValueError("a split run needs at least one device")
    if split and (settings.per_position_fits or settings.subpixel_windows):
        raise ValueError("position refinement (-refinePositions), the per-position intensity fit "
                         "(-variableIntensity) and sub-pixel windows (-subpixelWindows) run on one device, not in "
                         "a split run")
    ex = exchange_for(algorithm, exchange) if split else ""
    impl, impl_reason = _implementation(algorithm, backend, options, implementation, ex)
    mean = reports_mean(algorithm, settings)
    if split:
        g = len(devices)
        devices_reason = (f"{g} device{'s' if g > 1 else ''} listed: the scan is cut into {g} "
                          f"region{'s' if g > 1 else ''}, kept one reconstruction by the {ex} exchange")
        return RunPlan(algorithm, backend, impl, impl_reason, "per region", "each region plans its own memory",
                       True, tuple(int(d) for d in devices), devices_reason, ex, options, None, mean,
                       f"each region {_mean_reason(settings)}" if mean else "")
    devices_reason = "one device" + (" (-gpus lists one)" if len(devices) == 1 else "")

    def memory_with(with_mean: bool) -> MemoryPlan:
        return memory_plan.plan_memory(
            sizes.n_positions, sizes.size_px, sizes.object_shape, algorithm=algorithm, probe_modes=sizes.probe_modes,
            batch_size=settings.batch_size, per_frame_mask=sizes.mask == "per_frame",
            fast_gpu=backend == "gpu" and impl == "fast", cap_bytes=memory_cap_bytes,
            free_bytes=free_bytes, per_position_fits=settings.per_position_fits,
            subpixel_windows=settings.windows_follow_positions, iterate_mean=with_mean)

    memory = memory_with(mean)
    mean_reason = f"the run {_mean_reason(settings)}" if mean else ""
    if mean and memory.mode == "refuse" and (without := memory_with(False)).mode != "refuse":
        extra = sizes.object_shape[0] * sizes.object_shape[1] * 8 + sizes.probe_modes * sizes.size_px ** 2 * 8
        memory, mean = without, False
        mean_reason = (f"the last iterate is reported (-meanSpan={settings.mean_span} asks for the mean, whose "
                       f"copy of the object and probe, {extra / GIB:.2f} GiB, does not fit as well)")
    return RunPlan(algorithm, backend, impl, impl_reason, _residency(memory), _residency_reason(memory),
                   False, tuple(int(d) for d in devices), devices_reason, "", options, memory, mean, mean_reason)


def reports_mean(algorithm: str, settings: EngineSettings) -> bool:
    """True when a run of ``algorithm`` with ``settings`` asks to report the mean of its iterates (memory allowing:
    :func:`plan_run` decides)."""
    return algorithm in REPORTS_MEAN and settings.mean_span > 1


def _mean_reason(settings: EngineSettings) -> str:
    return f"reports the mean of its iterates (span {settings.mean_span}: the mini-batches' jitter averaged out)"


def plan_of_regions(split_plan: RunPlan, region_plans: Sequence[RunPlan]) -> RunPlan:
    """The split run's plan once each region planned its own memory: streamed when any region streams."""
    if not split_plan.split:
        raise ValueError("plan_of_regions takes the plan of a split run")
    modes = [p.residency for p in region_plans]
    residency = "streamed" if "streamed" in modes else "resident"
    streamed = sum(m == "streamed" for m in modes)
    why = (f"{streamed} of {len(modes)} regions stream their data from host memory" if streamed
           else f"every region's data fit on its device ({len(modes)} regions)")
    return replace(split_plan, residency=residency, residency_reason=why)


def _implementation(algorithm: str, backend: str, options: tuple[str, ...], requested: str,
                    exchange: str) -> tuple[str, str]:
    if backend == "cpu":
        if requested == "fast":
            raise ValueError("implementation='fast' needs a CUDA GPU; this run is on the CPU")
        return "reference", "the CPU runs the NumPy reference engines"
    if requested == "reference":
        return "reference", "the reference engine was asked for (implementation='reference')"
    if exchange == "sums":
        why = "the split DM all-reduces the reference DM's overlap sums (exchange 'sums')"
        if requested == "fast":
            raise ValueError(f"implementation='fast' is not possible: {why}")
        return "reference", why
    missing = [o for o in options if o not in FAST_PATH_SUPPORTS[algorithm]]
    if missing:
        why = f"the fast {algorithm} does not implement {', '.join(RUN_OPTIONS[o] for o in missing)}"
        if requested == "fast":
            raise ValueError(f"implementation='fast' is not possible: {why}")
        return "reference", why
    return "fast", f"the fast {algorithm} implements every option of this run"


def _residency(memory: MemoryPlan) -> str:
    return "refused" if memory.mode == "refuse" else memory.mode


def _residency_reason(memory: MemoryPlan) -> str:
    if memory.limit_bytes is None:
        return "on the CPU the data stay in host memory"
    if memory.mode == "resident":
        return (f"the data fit on the device ({memory.resident_bytes / GIB:.2f} GiB of "
                f"{memory.limit_bytes / GIB:.2f} GiB)")
    if memory.mode == "streamed":
        return (f"resident the run needs {memory.resident_bytes / GIB:.2f} GiB, more than "
                f"{memory.limit_bytes / GIB:.2f} GiB; streamed in chunks of {memory.chunk_positions} patterns it "
                f"needs {(memory.streamed_bytes or 0) / GIB:.2f} GiB")
    return memory.message
