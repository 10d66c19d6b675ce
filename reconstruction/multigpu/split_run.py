"""One reconstruction split over G devices: :class:`SplitReconstruction`, the driver's interface over G regions.

Each region is a plain :class:`~reconstruction.driver.Reconstruction` of its positions on its object window
(see :mod:`.partition`), run in its own thread on its device (a CuPy device per GPU index, or a NumPy "device"
on the CPU). Regions that share a device take turns (a lock per device), so G partitions on one GPU run in
sequence. Two ways to keep the regions one reconstruction:

* ``exchange="sums"`` (DM): the overlap projection's sums are all-reduced every iteration
  (:class:`~.shared_dm.SharedDM`); regions hold only the positions they own and the run equals the one-device run.
* ``exchange="periodic"`` (ePIE, LSQML): regions hold a halo of ``overlap_px`` and every ``share_frequency``
  iterations the object is averaged over the regions holding each pixel (weighted by their illumination)
  and the probe over all regions (:mod:`.exchange`).

The object is merged on the host (:mod:`.merge`) when asked for.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..driver import Reconstruction, canonical_algorithm
from ..engines import EngineSettings
from ..engines.base import object_illumination
from ..errors import SessionStateError
from ..inputs import check_run_settings, check_shapes, check_values, initial_object
from ..loop import IterativeRun
from ..preview import Preview, make_preview
from ..probes import held_probe_guess, probe_guess_from_data
from ..run_plan import RunPlan, plan_of_regions, plan_run
from ..state import Progress, Result
from .exchange import Communicator, CommunicatorAborted, LocalCommunicator, NcclCommunicator, share_object, share_probe
from .merge import merge_objects
from .partition import Region, partition
from .shared_dm import Link, SharedDM


class _TakeTurns:
    """A communicator wrapper that lets other regions on the same device run while a rank waits."""

    def __init__(self, inner: Communicator, locks: Sequence[threading.Lock]):
        self.inner = inner
        self.locks = locks
        self.size = inner.size

    def allreduce_sum(self, rank: int, buf: Any) -> None:
        lock = self.locks[rank]
        lock.release()
        try:
            self.inner.allreduce_sum(rank, buf)
        finally:
            lock.acquire()

    def abort(self) -> None:
        self.inner.abort()


class SplitReconstruction(IterativeRun):
    """A reconstruction over G regions, G = len(devices); the interface of :class:`Reconstruction`.

    intensities (N, n, n), positions_px (N, 2) and the keyword arguments as for :class:`Reconstruction`.
    devices: one entry per region, GPU indices (``backend="gpu"``; repeat an index to run several regions on
    one GPU in sequence) or NumPy "device" labels (``backend="cpu"``). grid: (gr, gc) regions per axis,
    default strips along the longer scan axis. communicator: default NCCL over distinct GPUs, else local.
    implementation: "auto", "fast" or "reference", as for :class:`Reconstruction`; the run plan
    (:attr:`plan`, :mod:`reconstruction.run_plan`) decides for all regions (the summed DM runs the reference DM).
    memory_cap_bytes: the most GPU memory each region's run may use (0 = whatever is free on its device).
    """

    def __init__(
        self,
        intensities: Any,
        positions_px: Any,
        *,
        devices: Sequence[int],
        backend: str = "cpu",
        overlap_px: int = 0,
        share_frequency: int = 10,
        exchange: str = "auto",
        grid: tuple[int, int] | None = None,
        communicator: Communicator | None = None,
        implementation: str = "auto",
        algorithm: str = "ePIE",
        iterations: int = 100,
        probe: Any = None,
        probe_modes: int = 1,
        object_shape: tuple[int, int] | None = None,
        object_guess: Any = None,
        seed: int | None = None,
        valid_mask: Any = None,
        settings: EngineSettings | None = None,
        beam_diameter_px: float | None = None,
        pixel_size_m: float | None = None,
        centred: bool = False,
        time_limit_s: float = 0.0,
        memory_cap_bytes: int = 0,
        parameters: Any = None,
        inputs: dict[str, Any] | None = None,
    ):
        self.algorithm = canonical_algorithm(algorithm)
        if backend not in ("cpu", "gpu"):
            raise ValueError(f"backend={backend!r}: expected 'cpu' or 'gpu'")
        if len(devices) < 1:
            raise ValueError("devices: give at least one device")
        if share_frequency < 1:
            raise ValueError(f"share_frequency={share_frequency}: must be >= 1")
        self.devices = [int(d) for d in devices]
        self.backend_name = backend
        self.share_frequency = int(share_frequency)
        self.overlap_px = int(overlap_px)
        self.settings = settings or EngineSettings()
        check_run_settings(self.algorithm, self.settings, iterations=iterations, probe_modes=probe_modes,
                           memory_cap_bytes=memory_cap_bytes)
        self._start_loop(iterations, time_limit_s)
        self.parameters = parameters
        self.pixel_size_m = pixel_size_m
        self.inputs = dict(inputs or {})

        # the one-device run's checks, on the whole scan (the regions' runs skip the pass over the values)
        checked = check_shapes(intensities, positions_px, valid_mask=valid_mask, centred=centred,
                               object_shape=object_shape, probe=probe, probe_modes=probe_modes)
        split_plan = plan_run(self.algorithm, self.settings, checked.sizes(), backend=backend, devices=self.devices,
                              split=True, implementation=implementation, exchange=exchange)
        check_values(checked)
        intens, mask, corners, n = checked.intensities, checked.valid_mask, checked.corners, checked.size_px
        self.positions_px = corners.astype(np.float64)
        self.probe_size_px = n
        self.object_shape: tuple[int, int] = checked.object_shape
        self.exchange = split_plan.exchange
        probe_h = probe if probe is not None else probe_guess_from_data(intens, beam_diameter_px, probe_modes, mask)
        if probe is not None and np.shape(probe)[-2:] == (n, n):  # (a wrong shape: the regions' runs say so)
            # a held poor guess is fitted to the whole scan's mean pattern, so that every region starts from one probe
            probe_h, note = held_probe_guess(np.asarray(probe, dtype=np.complex64), intens, mask,
                                             self.settings.update_probe_from)
            if note:
                self.inputs["probe_guess"] = note
        self.initial_object = initial_object(np, self.object_shape, object_guess)
        G = len(self.devices)
        halo_px = self.overlap_px if self.exchange == "periodic" else 0
        self.regions: list[Region] = partition(corners, n, self.object_shape, G, halo_px, grid)

        distinct = sorted(set(self.devices))
        self._locks = {d: threading.Lock() for d in distinct}
        rank_locks = [self._locks[d] for d in self.devices]
        if communicator is None:
            use_nccl = backend == "gpu" and len(distinct) == G and G > 1
            communicator = NcclCommunicator(self.devices) if use_nccl else LocalCommunicator(G)
        self.comm: Communicator = _TakeTurns(communicator, rank_locks)
        self._pool = ThreadPoolExecutor(max_workers=G, thread_name_prefix="region") if G > 1 else None
        self.recs: list[Reconstruction] = []
        sub_masks = [mask[reg.positions] if mask is not None and mask.ndim == 3 else mask for reg in self.regions]
        for reg, sub_mask in zip(self.regions, sub_masks, strict=True):
            region_seed = seed if seed is None or self.exchange == "sums" else seed + 7919 * reg.index
            with self._on_device(reg.index):
                rec = Reconstruction(
                    intens[reg.positions], reg.local_corners(corners), algorithm=self.algorithm,
                    iterations=self.iterations, probe=probe_h, probe_modes=probe_modes,
                    object_shape=reg.window.shape, object_guess=self.initial_object[reg.window.slices],
                    device=backend, seed=region_seed, valid_mask=sub_mask, settings=self.settings,
                    beam_diameter_px=beam_diameter_px, pixel_size_m=pixel_size_m, memory_cap_bytes=memory_cap_bytes,
                    implementation=split_plan.implementation, _values_checked=True)
                if self.exchange == "sums":  # the driver's engine hook: see docs/multigpu.md
                    rec.engine = SharedDM.adopt(rec.engine, Link(self.comm, reg.index, reg.window,
                                                                 self.object_shape, reg.positions, len(corners)))
            self.recs.append(rec)
        self.plan: RunPlan = plan_of_regions(split_plan, [r.plan for r in self.recs])
        self._closed = False
        self._broken: str | None = None

    # -- the loop (IterativeRun.step around this) ---------------------------------------------------------
    def _iterate(self, it: int) -> tuple[float, float | None]:
        """One iteration on every region (and the exchange when it is due); the combined (error, rms).

        The error is the ratio of the regions' summed error sums: exact with the DM sums (regions own disjoint
        positions), counting halo positions twice with the periodic exchange."""
        share = self.exchange == "periodic" and it % self.share_frequency == 0
        progs = self._on_all(lambda g: self._region_step(g, share))
        sums = np.asarray([_error_sums(r) for r in self.recs], dtype=np.float64)
        error = float(np.sqrt(sums[:, 0].sum() / max(float(sums[:, 1].sum()), 1e-30)))
        rms = None
        if all(p.rms is not None for p in progs):
            counts = np.asarray([len(r.positions) for r in self.regions], dtype=np.float64)
            rms = float(np.sum(np.asarray([p.rms for p in progs]) * counts) / counts.sum())
        return error, rms

    def _region_step(self, g: int, share: bool) -> Progress:
        rec = self.recs[g]
        progress = rec.step()
        if share:
            st, xp = rec.state, rec.backend.xp
            weight = object_illumination(st)
            share_object(xp, self.comm, g, st.obj, weight, self.regions[g].window, self.object_shape)
            share_probe(xp, self.comm, g, st.probe)
            rec.backend.synchronize()
        return progress

    # -- reading the state ----------------------------------------------------------------------------------
    def region_objects(self) -> list[np.ndarray]:
        """Host copies of each region's object window, (h_g, w_g) complex64."""
        return self._on_all(lambda g: self.recs[g].object())

    def region_illumination(self) -> list[np.ndarray]:
        """Host (h_g, w_g) float32 illumination of each region by its own positions."""
        return self._on_all(lambda g: self.recs[g].illumination())

    def object(self) -> np.ndarray:
        """Host (H, W) complex64 object merged from the regions (illumination-weighted)."""
        self._require_open()
        return merge_objects(self.region_objects(), self.region_illumination(),
                             [r.window for r in self.regions], self.object_shape, fill=self.initial_object)

    def probe(self) -> np.ndarray:
        """Host (modes, n, n) complex64: the mean of the regions' probes (identical after an exchange)."""
        self._require_open()
        probes = self._on_all(lambda g: self.recs[g].probe())
        return np.mean(np.stack(probes), axis=0).astype(np.complex64)

    def illumination(self) -> np.ndarray:
        """Host (H, W) float32 sum of the probe intensity over every position's window."""
        p2 = np.sum(np.abs(self.probe()) ** 2, axis=0)
        n = p2.shape[-1]
        out = np.zeros(self.object_shape, dtype=np.float64)
        for r, c in self.positions_px.astype(np.int64):
            out[r:r + n, c:c + n] += p2
        return out.astype(np.float32)

    def scanned_region(self) -> tuple[slice, slice]:
        n = self.recs[0].state.size_px
        lo = self.positions_px.min(axis=0).astype(int)
        hi = self.positions_px.max(axis=0).astype(int) + n
        return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))

    def preview(self, max_px: int = 512, *, diffraction_position: int | None = None) -> Preview:
        """Preview of the merged object (a host merge of the region windows) and the probe; a split run has no
        diffraction panel, so ``diffraction_position`` (the one-device run's argument) changes nothing."""
        return make_preview(np, self.object(), self.probe(), self.iteration, max_px, np.asarray,
                            region=self.scanned_region())

    def result(self) -> Result:
        return Result(
            object=self.object(), probe=self.probe(), positions_px=self.positions_px.copy(),
            errors=list(self.errors), rms=list(self.rms), iteration_s=list(self.iteration_s),
            algorithm=self.algorithm, device=self.device, pixel_size_m=self.pixel_size_m,
            parameters=self.parameters, stopped_early=self.stopped_early, inputs=dict(self.inputs),
            run_plan=self.plan.to_dict(),
        )

    @property
    def device(self) -> str:
        """E.g. '4 regions on GPUs 0,1,2,3 (NVIDIA H200 (GPU 0), ...)' or '2 regions on CPU (NumPy 2.1) x2'."""
        names = sorted({rec.backend.device for rec in self.recs})
        where = "GPUs " + ",".join(str(d) for d in self.devices) if self.backend_name == "gpu" else "CPU"
        return f"{len(self.recs)} regions on {where} ({'; '.join(names)})"

    def close(self) -> None:
        for g, rec in enumerate(self.recs):
            with self._on_device(g):
                rec.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._closed = True

    # -- helpers --------------------------------------------------------------------------------------------
    def _on_device(self, g: int) -> contextlib.AbstractContextManager[Any]:
        if self.backend_name != "gpu":
            return contextlib.nullcontext()
        import cupy  # type: ignore[import-not-found]

        return cupy.cuda.Device(self.devices[g])

    def _on_all(self, fn: Callable[[int], Any]) -> list[Any]:
        """``fn(g)`` for every region, each in its thread on its device holding its device lock."""
        def task(g: int) -> Any:
            with self._on_device(g), self._locks[self.devices[g]]:
                try:
                    return fn(g)
                except BaseException:
                    self.comm.abort()
                    raise

        if self._pool is None:
            return [task(0)]
        futures = [self._pool.submit(task, g) for g in range(len(self.recs))]
        results, errors = [], []
        for f in futures:
            try:
                results.append(f.result())
            except BaseException as exc:  # noqa: BLE001 - re-raised below, the root cause first
                errors.append(exc)
        if errors:
            self._broken = str(errors[0])
            root = [e for e in errors if not isinstance(e, CommunicatorAborted)]
            raise (root or errors)[0]
        return results

    def _require_open(self) -> None:
        if self._closed:
            raise SessionStateError("this split reconstruction was closed; start a new one")
        if self._broken is not None:
            raise SessionStateError(f"a region failed ({self._broken}); start a new run")


def _error_sums(rec: Reconstruction) -> tuple[float, float]:
    """(sum of squared amplitude errors, sum of measured A^2) of a region's last iteration."""
    m = rec.last_metrics
    if m is None:
        raise SessionStateError("a region has not run an iteration yet")
    return m.sq_err, m.sq_amp
