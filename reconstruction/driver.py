"""The one reconstruction loop. Whole mode, step mode, the CLI and the web worker all drive this class.

>>> rec = Reconstruction(intensities, positions_px, algorithm="LSQML", iterations=50)
>>> for progress in rec:          # one Progress per iteration
...     pass
>>> result = rec.result()         # host copies of object, probe, positions and the error history

Data stay on the device (NumPy or CuPy) across iterations; only :meth:`preview` (small uint8 images) and
the per-iteration error scalars come back to the host inside the loop.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from . import memory_plan
from .backend import Backend, get_backend
from .diffraction_preview import MAX_DIFFRACTION_PX, central_position, diffraction_preview
from .engines import EngineSettings, EngineState, create_engine
from .engines.base import IterationMetrics, apply_phase_constraint, object_illumination
from .errors import DeviceMemoryError, InputDataError, SessionStateError
from .inputs import check_run_settings, check_shapes, check_values, initial_object
from .iterate_mean import IterateMean
from .loop import IterativeRun
from .parameters.model import ALGORITHM_ALIASES, affine_terms
from .physics import modes as probe_modes_ops
from .position_errors import PIXELS_PER_PREVIEW, PositionErrorSweep
from .preview import Preview, make_preview, positions_stride, preview_positions
from .probes import held_probe_guess, probe_guess_from_data
from .run_plan import RunPlan, plan_run
from .state import Result

if TYPE_CHECKING:
    from .parameters import Parameters
    from .scan_data import ScanData


def canonical_algorithm(name: str) -> str:
    """'epie'/'ePIE' -> 'ePIE', 'dm' -> 'DM', 'lsqml'/'MLs' -> 'LSQML'; ValueError otherwise."""
    canon = ALGORITHM_ALIASES.get(str(name).lower())
    if canon is None:
        raise ValueError(f"algorithm={name!r}: expected one of ePIE, DM, LSQML (MLs)")
    return canon


def estimate_memory_bytes(n_positions: int, size_px: int, object_shape: tuple[int, int], *, algorithm: str,
                          probe_modes: int = 1, batch_size: int = 0, per_frame_mask: bool = False,
                          fast_gpu: bool = False, per_position_fits: bool = False) -> int:
    """Device memory a run needs with all its data resident (bytes); see :mod:`reconstruction.memory_plan`."""
    return memory_plan.estimate_memory_bytes(
        n_positions, size_px, object_shape, algorithm=canonical_algorithm(algorithm), probe_modes=probe_modes,
        batch_size=batch_size, per_frame_mask=per_frame_mask, fast_gpu=fast_gpu,
        per_position_fits=per_position_fits)


class Reconstruction(IterativeRun):
    """A reconstruction in progress on one device.

    intensities: (N, n, n) float photon counts, zero frequency at [0, 0] (``centred=True``: at the centre).
    positions_px: (N, 2) float (row, col) of each window's top-left corner in the object array; corners are
    rounded to whole pixels, except with sub-pixel windows (``settings.subpixel_windows``, every engine) or
    position refinement (``settings.position_refinement_from``, LSQML), where windows follow the positions as
    given (never rounded) and :meth:`positions` returns them (refined, when refining).
    probe: None (a guess is built from the data and ``beam_diameter_px``), (n, n) or (modes, n, n) complex; a
    guess held for the first iterations whose far field the data reject is fitted to their mean pattern first
    (:func:`~reconstruction.probes.held_probe_guess`; ``inputs["probe_guess"]`` then says so).
    object_guess: None (unit transmission) or a complex array pasted centred.
    valid_mask: None, (n, n) or (N, n, n) bool, True where a pixel constrains the fit.
    memory_cap_bytes: the most GPU memory the run may use (0 = whatever is free). When the data do not fit
    but the fast GPU ePIE/LSQML working set does, the intensities stay in host memory (pinned; a C-contiguous
    float32 array is registered in place, anything else is copied once) and stream to the device chunk by
    chunk; otherwise :class:`DeviceMemoryError` is raised before any work (``memory_plan`` says which).
    implementation: "auto" (the fast GPU engine where it implements the run's options), "fast" or "reference".
    ``plan`` (:class:`~reconstruction.run_plan.RunPlan`) says what was decided and why. The input checks are
    :mod:`reconstruction.inputs` (``_values_checked``: the split run checked the whole scan's values already).
    """

    def __init__(
        self,
        intensities: Any,
        positions_px: Any,
        *,
        algorithm: str = "ePIE",
        iterations: int = 100,
        probe: Any = None,
        probe_modes: int = 1,
        object_shape: tuple[int, int] | None = None,
        object_guess: Any = None,
        device: str = "auto",
        seed: int | None = None,
        valid_mask: Any = None,
        settings: EngineSettings | None = None,
        beam_diameter_px: float | None = None,
        pixel_size_m: float | None = None,
        centred: bool = False,
        time_limit_s: float = 0.0,
        memory_cap_bytes: int = 0,
        parameters: Parameters | None = None,
        inputs: dict[str, Any] | None = None,
        implementation: str = "auto",
        _values_checked: bool = False,
    ):
        self.algorithm = canonical_algorithm(algorithm)
        self.settings = settings or EngineSettings()
        check_run_settings(self.algorithm, self.settings, iterations=iterations, probe_modes=probe_modes,
                           memory_cap_bytes=memory_cap_bytes)
        self.parameters = parameters
        self.pixel_size_m = pixel_size_m
        self.inputs = dict(inputs or {})

        # cheap checks (shapes) and the plan first: a run that cannot fit is refused before the passes over the
        # data, which take minutes for hundreds of GB
        checked = check_shapes(intensities, positions_px, valid_mask=valid_mask, centred=centred,
                               object_shape=object_shape, probe=probe, probe_modes=probe_modes)
        intensities_h, positions, corners, mask_h = (checked.intensities, checked.positions_px, checked.corners,
                                                     checked.valid_mask)
        shape, n = checked.object_shape, checked.size_px
        self.probe_modes = checked.probe_modes
        self._start_loop(iterations, time_limit_s)

        self.backend: Backend = get_backend(device)
        self.memory_cap_bytes = int(memory_cap_bytes)
        self.plan: RunPlan = plan_run(
            self.algorithm, self.settings, checked.sizes(), backend=self.backend.name,
            free_bytes=self.backend.free_memory_bytes(), memory_cap_bytes=self.memory_cap_bytes,
            implementation=implementation)
        assert self.plan.memory is not None  # one device: the plan holds its memory arithmetic
        self.memory_plan = self.plan.memory
        self.needed_bytes = self.memory_plan.needed_bytes
        self._check_memory()
        if not _values_checked:
            check_values(checked)
        probe_h = self._initial_probe(probe, intensities_h, probe_modes, beam_diameter_px, mask_h)
        self.rng = np.random.default_rng(seed)
        xp = self.backend.xp
        try:
            obj = initial_object(xp, shape, object_guess)
            amplitudes = self._device_amplitudes(intensities_h)
            self.state = EngineState(
                xp=xp, obj=obj, probe=xp.asarray(probe_h), amplitudes=amplitudes,
                valid=None if mask_h is None else xp.asarray(mask_h),
                rows=xp.asarray(corners[:, 0]), cols=xp.asarray(corners[:, 1]), rng=self.rng,
                # a guess that already holds several modes uses them all; otherwise extra modes are seeded at
                # update_modes_from
                modes_active=self.probe_modes if np.any(probe_h[1:]) else 1,
                positions_px=xp.array(positions) if self.settings.windows_follow_positions else None,
            )
            del intensities_h, checked  # a host copy (centred, or another dtype) is not kept
            self.engine: Any = create_engine(self.algorithm, self.state, self.settings, self.plan.implementation)
            # the run reports the mean of its iterates where its plan says so (iterate_mean.py; LSQML, -meanSpan)
            self.iterate_mean: IterateMean | None = (
                IterateMean.start(xp, self.state.obj, self.state.probe, self.settings.mean_span)
                if self.plan.iterate_mean else None)
        except MemoryError as exc:
            raise self._oom(exc) from exc
        self.positions_px = corners.astype(np.float64)
        self._start_positions_px = positions.copy()
        self._diffraction_position = central_position(self._start_positions_px)
        self._error_sweep: PositionErrorSweep | None = None  # each shown position's error (resident data)
        self.probe_size_px = int(n)
        self._object_shape = shape
        self.last_metrics: IterationMetrics | None = None
        self._closed = False

    # -- construction from the parameter object ----------------------------------------------------------
    @classmethod
    def from_parameters(cls, params: Parameters, *, data: ScanData | None = None,
                        progress: Any = None, device: str | None = None) -> Reconstruction:
        """Load (or simulate) the data the parameters describe and set up the run."""
        from .loading import load_scan

        data = data if data is not None else load_scan(params, progress=progress)
        return cls(data.intensities, data.positions_px, device=device or params.reconstruction.device,
                   **run_arguments(params, data))

    # -- the loop (IterativeRun.step around this) ---------------------------------------------------------
    def _iterate(self, it: int) -> tuple[float, float | None]:
        """Iteration ``it`` on the device: modes seeded when due, the engine's epoch, the phase constraint and
        the mode orthogonalisation; (error, rms or None)."""
        st, xp, s = self.state, self.backend.xp, self.settings
        try:
            if self.probe_modes > 1 and st.modes_active == 1 and it >= s.update_modes_from:
                st.probe[...] = probe_modes_ops.seed_extra_modes(xp, st.probe, self.rng)
                st.modes_active = self.probe_modes
                if hasattr(self.engine, "modes_changed"):
                    self.engine.modes_changed()
            metrics = self.engine.iterate(it, update_probe=it >= s.update_probe_from)
            self.last_metrics = metrics
            if it <= s.phase_constraint:
                st.obj[...] = apply_phase_constraint(xp, st.obj)
                if hasattr(self.engine, "object_changed"):  # engines that keep sums of the object (fast DM)
                    self.engine.object_changed()
            if st.modes_active > 1:
                probe, transform = probe_modes_ops.orthogonalize_modes(xp, st.probe, return_transform=True)
                st.probe[...] = probe
                if hasattr(self.engine, "rotate_modes"):  # engines that keep per-mode exit waves (DM)
                    self.engine.rotate_modes(transform)
            if self.iterate_mean is not None:
                self.iterate_mean.update(st.obj, st.probe, st.modes_active, it)
            error = metrics.error
            self.backend.synchronize()
        except MemoryError as exc:
            raise self._oom(exc) from exc
        return error, metrics.rms

    # -- reading the state ----------------------------------------------------------------------------------
    def _reported(self) -> tuple[Any, Any]:
        """The (object, probe) device arrays the run reports: the mean of the iterates where the run plan says so
        (:mod:`reconstruction.iterate_mean`), else the engine's state."""
        mean = self.iterate_mean
        return (self.state.obj, self.state.probe) if mean is None else (mean.obj, mean.probe)

    def object(self) -> np.ndarray:
        """Host copy of the object, (H, W) complex64 (LSQML: the mean of the last iterates, ``-meanSpan``)."""
        self._require_open()
        return self.backend.asnumpy(self._reported()[0]).astype(np.complex64, copy=True)

    def probe(self) -> np.ndarray:
        """Host copy of the probe modes, (modes, n, n) complex64, strongest mode first (LSQML: the mean of the
        last iterates, ``-meanSpan``)."""
        self._require_open()
        return self.backend.asnumpy(self._reported()[1]).astype(np.complex64, copy=True)

    def positions(self) -> np.ndarray:
        """Host (N, 2) float64 positions (row, col) in pixels: the sub-pixel ones the windows follow (as given, or
        refined when the run refines positions), else the whole-pixel window corners used."""
        self._require_open()
        if self.state.positions_px is None:
            return self.positions_px.copy()
        return np.asarray(self.backend.asnumpy(self.state.positions_px), dtype=np.float64).copy()

    def intensity_scale(self) -> np.ndarray | None:
        """Host (N,) float32 fitted amplitude factor of each position (mean 1; the flux is its square), or None
        when the run does not fit them (``settings.variable_intensity``)."""
        self._require_open()
        scale = self.state.intensity_scale
        return None if scale is None else np.asarray(self.backend.asnumpy(scale), dtype=np.float32).copy()

    def illumination(self) -> np.ndarray:
        """Host (H, W) float32 sum of the probe intensity over all windows."""
        return self.backend.asnumpy(object_illumination(self.state))

    @property
    def device(self) -> str:
        """Description of the device the run uses, e.g. "NVIDIA H100 80GB HBM3 (GPU 0)"."""
        return self.backend.device

    @property
    def object_shape(self) -> tuple[int, int]:
        return self._object_shape

    def scanned_region(self) -> tuple[slice, slice]:
        """Slices of the object array covered by any window."""
        n = self.state.size_px
        lo = self.positions_px.min(axis=0).astype(int)
        hi = self.positions_px.max(axis=0).astype(int) + n
        return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))

    def preview(self, max_px: int = 512, *, diffraction_position: int | None = None) -> Preview:
        """Downsampled uint8 images of the object's scanned area and of each probe mode's amplitude and phase, each
        mode's share of the power, and every k-th scan position (at the start and now, with its flux, when the run
        refines them, follows sub-pixel positions or fits their flux; else as given).

        With resident data also: the measured and model pattern of ``diffraction_position`` (0..N-1; None: the
        position nearest the scan's middle), and each shown position's Fourier error, a chunk of them measured
        per call (:class:`reconstruction.position_errors.PositionErrorSweep`)."""
        self._require_open()
        st = self.state
        if diffraction_position is not None and not 0 <= int(diffraction_position) < st.n_positions:
            raise ValueError(f"diffraction_position={diffraction_position}: this scan has positions "
                             f"0..{st.n_positions - 1}")
        preview = make_preview(self.backend.xp, *self._reported(), self.iteration, max_px,
                               self.backend.asnumpy, region=self.scanned_region())
        if st.positions_px is not None or st.intensity_scale is not None:
            preview.positions = preview_positions(
                self._start_positions_px, self._start_positions_px if st.positions_px is None else st.positions_px,
                self.backend.asnumpy, refined=self.settings.position_refinement_from > 0,
                intensity_scale=st.intensity_scale)
        else:  # fixed positions: the scan as it was given (host arrays, no device copy)
            preview.positions = preview_positions(self._start_positions_px, self._start_positions_px, refined=False)
        if not self.streamed:  # patterns and per-position errors need the data on the device
            position = self._diffraction_position if diffraction_position is None else int(diffraction_position)
            preview.diffraction = diffraction_preview(st, position, self.backend.asnumpy,
                                                      min(max_px, MAX_DIFFRACTION_PX))
            if self._error_sweep is None:
                self._error_sweep = PositionErrorSweep(st.n_positions, positions_stride(st.n_positions),
                                                       st.size_px, PIXELS_PER_PREVIEW[self.backend.name])
            errors = self._error_sweep.advance(st, self.iteration, self.backend.asnumpy)
            preview.positions = dataclasses.replace(preview.positions, errors=errors.copy())
        return preview

    def result(self) -> Result:
        """Host copies of everything a result file needs."""
        return Result(
            object=self.object(), probe=self.probe(), positions_px=self.positions(),
            errors=list(self.errors), rms=list(self.rms), iteration_s=list(self.iteration_s),
            algorithm=self.algorithm, device=self.backend.device, pixel_size_m=self.pixel_size_m,
            parameters=self.parameters, stopped_early=self.stopped_early, inputs=dict(self.inputs),
            intensity_scale=self.intensity_scale(), run_plan=self.plan.to_dict(),
        )

    @property
    def streamed(self) -> bool:
        """True when the intensities stream from pinned host memory instead of living on the device."""
        return self.memory_plan.mode == "streamed"

    def close(self) -> None:
        """Free the device arrays (and unpin streamed host data); later calls raise SessionStateError."""
        self._closed = True
        state = getattr(self, "state", None)
        if state is not None and hasattr(state.amplitudes, "close"):
            state.amplitudes.close()
        self.engine = None  # type: ignore[assignment]
        self.state = None  # type: ignore[assignment]
        if self.backend.is_gpu:
            self.backend.xp.get_default_memory_pool().free_all_blocks()

    # -- helpers --------------------------------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._closed:
            raise SessionStateError("this reconstruction was closed (post() was called); start a new one")

    def _initial_probe(self, probe: Any, intensities: np.ndarray, modes: int,
                       beam_diameter_px: float | None, valid_mask: np.ndarray | None) -> np.ndarray:
        n = intensities.shape[-1]
        if probe is None:
            return probe_guess_from_data(intensities, beam_diameter_px, modes, valid_mask)
        p = np.asarray(probe)
        if p.ndim == 2:
            p = p[None]
        if p.ndim != 3 or p.shape[-2:] != (n, n):
            raise InputDataError(f"probe has shape {np.shape(probe)}: expected ({n}, {n}) or (modes, {n}, {n})")
        if not np.all(np.isfinite(p)):
            raise InputDataError("probe guess contains NaN or infinite values")
        out = np.zeros((max(modes, p.shape[0]), n, n), dtype=np.complex64)
        out[: p.shape[0]] = p
        out, note = held_probe_guess(out, intensities, valid_mask, self.settings.update_probe_from)
        if note:
            self.inputs["probe_guess"] = note
        return out

    def _check_memory(self) -> None:
        plan = self.memory_plan
        if plan.mode == "refuse":
            raise DeviceMemoryError(f"{plan.message} (on {self.backend.device})", plan.needed_bytes,
                                    plan.limit_bytes)

    def _device_amplitudes(self, intensities_h: np.ndarray) -> Any:
        """(N, n, n) float32 amplitudes on the device, or the host stream that feeds the fast engines."""
        xp = self.backend.xp
        if self.backend.is_gpu:
            from .gpu.streaming import AmplitudeStream, upload_amplitudes

            if self.streamed:
                return AmplitudeStream(intensities_h, self.memory_plan.chunk_positions)
            return upload_amplitudes(intensities_h)  # a copy: the caller's array stays as it was
        amplitudes = xp.array(intensities_h, dtype=xp.float32)  # a copy: the caller's array stays as it was
        xp.sqrt(amplitudes, out=amplitudes)  # in place: no second data-sized buffer on the device
        return amplitudes

    def _oom(self, exc: BaseException) -> DeviceMemoryError:
        free = self.backend.free_memory_bytes()
        return DeviceMemoryError(
            f"out of memory on {self.backend.device} ({exc}); this {self.algorithm} run needs about "
            f"{self.needed_bytes / 2**30:.2f} GiB", self.needed_bytes, free)


def settings_from_parameters(params: Parameters) -> EngineSettings:
    """Engine knobs from ``params.reconstruction``."""
    r = params.reconstruction
    return EngineSettings(
        update_probe_from=r.update_probe_from, update_modes_from=r.update_modes_from,
        phase_constraint=r.phase_constraint, delta_p=r.delta_p, beta_decay=r.beta_decay, mean_span=r.mean_span,
        noise_model=r.noise_model,
        batch_size=r.batch_size, compute_rms=r.rms, dm_relax=r.dm_relax,
        position_refinement_from=r.position_search_from if r.refine_positions else 0,
        position_affine=affine_terms(r.position_affine), affine_delay=r.position_affine_delay,
        affine_epochs=r.position_affine_epochs, coarse_search_px=r.coarse_search_px,
        coarse_search_epochs=r.coarse_search_epochs,
        variable_intensity=r.variable_intensity, subpixel_windows=r.subpixel_windows,
    )


def run_arguments(params: Parameters, data: ScanData) -> dict[str, Any]:
    """The keyword arguments that ``params`` and the loaded ``data`` give a run: :class:`Reconstruction` and the
    split run over several GPUs (``multigpu.from_parameters``) take the same ones (guesses loaded here)."""
    from .loading import load_guesses

    probe, obj = load_guesses(params, data)
    r = params.reconstruction
    pixel = data.pixel_size_m or params.pixel_size_m
    return dict(
        algorithm=r.algorithm, iterations=r.iterations, probe=probe, probe_modes=r.probe_modes, object_guess=obj,
        seed=r.seed if r.seed >= 0 else None, valid_mask=data.valid_mask, settings=settings_from_parameters(params),
        beam_diameter_px=params.experiment.beam_size_m / pixel, pixel_size_m=pixel, time_limit_s=r.time_limit_s,
        memory_cap_bytes=int(r.memory_cap_gib * memory_plan.GIB), parameters=params, inputs=data.source,
    )


def reconstruct(intensities: Any, positions_px: Any, *, algorithm: str = "ePIE", iterations: int = 100,
                probe: Any = None, probe_modes: int = 1, object_shape: tuple[int, int] | None = None,
                device: str = "auto", seed: int | None = None, callback: Any = None, **kwargs: Any) -> Result:
    """Reconstruct ``intensities`` (N, n, n) at ``positions_px`` (N, 2) and return the host :class:`Result`.

    Keyword arguments are those of :class:`Reconstruction` (valid_mask, settings, beam_diameter_px, centred,
    object_guess, time_limit_s, ...). ``callback(progress)`` runs after every iteration.
    """
    rec = Reconstruction(intensities, positions_px, algorithm=algorithm, iterations=iterations, probe=probe,
                         probe_modes=probe_modes, object_shape=object_shape, device=device, seed=seed, **kwargs)
    return rec.run(callback)
