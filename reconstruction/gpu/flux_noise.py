"""The per-position flux fit (-variableIntensity) and the Poisson noise model of the fast ePIE and DM
(kernels/flux_noise.cu, with the far-field kernels of kernels/lsqml_fits.cu: lf_modulus, lf_poisson_newton,
lf_poisson_apply).

Both keep the semantics of the reference engines (``engines/epie.py``, ``engines/dm.py``), rearranged so that
nothing leaves the device and every per-position sequence stays in the engines' CUDA graphs:

- ePIE, flux: after the forward transform of step j's exit waves (at c = 1), nf_epie_flux_sums reduces the fit's
  sums over the far field, nf_epie_flux_scale turns them into c_j (kept where the model is dark), stores it and
  multiplies the spectra by it (with refinement the two moved gradients too), so the far-field step that follows
  sees the model c_j Psi, as the reference's probe c_j P does. The update then divides both steps by c_j
  (epie_step_window: conj(c P) D / max |c P|^2 = conj(P) D / (c max |P|^2), and d psi / d P = c O).
- ePIE, either option: the far-field step is lf_modulus's (Gaussian: the difference F^-1[Psi (A / |Psi| - 1)];
  Poisson: the model intensities, three Newton passes for alpha_j, then F^-1[Psi alpha_j g]), so the update takes
  the difference D itself (``diff``) and the error sums are those of the scaled model.
- DM, flux: after the object update, nf_dm_flux_sums reduces Re<P_j O_j, psi_j> and ||P_j O_j||^2 per position;
  nf_flux_normalise fits c_j and divides the factors by their mean; the probe (and the moved probes of sub-pixel
  windows) is multiplied by it. Every DM kernel that reads the probe lights window j with c_j P_j, and the probe
  update sees c_j O_j.
- DM, Poisson: the reflected wave's far field takes lf_modulus (intensities), the Newton passes and
  lf_poisson_apply per chunk; dm_psi_update then sets psi = phi + F^-1[Psi alpha_j g] (``diff``).
- Both: after each epoch (ePIE) or iteration (DM) the factors have mean 1 and the probe carries the mean
  (nf_flux_normalise, nf_scale_by_slot; ``base.normalise_flux``).

Agreement with the reference engines: ``tests/reconstruction/test_flux_noise_arithmetic_cpu.py`` (the arithmetic,
on the CPU) and ``tests/gpu/test_flux_noise.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import runtime as rt
from .lsqml_fits import FIT_BLOCKS, LF_SLOTS, NEWTON_PASSES
from .runtime import f32, i32, i64

#: the run options (run_plan.RUN_OPTIONS) this module adds to the fast ePIE and DM
FLUX_NOISE_OPTIONS = frozenset({"variable_intensity", "poisson_noise"})


class FluxNoiseMixin:
    """Buffers and launches of the flux fit and the Poisson model shared by FastEPIE and FastDM."""

    state: Any
    settings: Any
    cp: Any
    n: int
    n2: int
    mask: Any
    _null: Any

    def _setup_flux_noise(self, rows: int, mi_rows: int) -> None:
        """Buffers for ``rows`` positions' sums (ePIE: the epoch's visiting steps; DM: the positions) and
        ``mi_rows`` patterns' model intensities (the Poisson step) per lane."""
        cp, st = self.cp, self.state
        self._null = np.uint64(0)
        self._flux = st.intensity_scale is not None
        self._poisson = self.settings.noise_model == "poisson"
        self._fits = self._flux or self._poisson
        # the Poisson step's model intensities (a placeholder without it: the windows' far-field step passes it)
        self.mi = [cp.empty(mi_rows * self.n2 if self._poisson else 1, dtype=cp.float32) for _ in range(2)]
        if not self._fits:
            return
        self.flux_sums = cp.zeros(2 * rows, dtype=cp.float64)
        self.flux_slot = cp.ones(1, dtype=cp.float32)  # the factors' mean, which the probe takes
        self.noise_acc = cp.zeros(rows * LF_SLOTS, dtype=cp.float64)  # lf_modulus' and the Newton passes' sums
        self.noise_err = cp.zeros(2, dtype=cp.float64)

    def _scale_arg(self) -> Any:
        """The amplitude factors as the kernels take them: the (N,) device array, or a null pointer."""
        return self.state.intensity_scale if self._flux else self._null

    def _far_field_step(self, far: Any, order: Any, b0: int, cnt: int, m: int, amp: Any, amp_from: int,
                        refine: bool, plane: int, acc: Any, err: Any, lane: int = 0) -> None:
        """The far-field step of positions order[b0 .. b0 + cnt) in place on their unnormalised spectra ``far``
        (cnt m planes; with ``refine`` the moved gradients' at + plane, + 2 plane): the difference
        F[psi' - psi] / n2, lf_modulus' step terms and error sums (into ``err``); Gaussian or Poisson."""
        n2, mask = self.n2, self.mask
        grid = ((min(FIT_BLOCKS, -(-n2 // rt.BLOCK)), cnt), (rt.BLOCK,))
        poisson, mi = i32(1 if self._poisson else 0), self.mi[lane]
        rt.kernel("lf_modulus")(*grid, (
            far, amp, *mask, order, i32(b0), i32(n2), i32(m), f32(1.0 / self.n), f32(1.0 / n2), err, i32(amp_from),
            i32(1 if refine else 0), i64(plane), poisson, mi, acc))
        if self._poisson:
            for t in range(NEWTON_PASSES):
                rt.kernel("lf_poisson_newton")(*grid, (mi, amp, *mask, order, i32(b0), i32(n2), i32(amp_from), i32(t),
                                                       acc))
            rt.kernel("lf_poisson_apply")(*grid, (far, mi, amp, *mask, order, i32(b0), i32(n2), i32(m),
                                                  f32(1.0 / n2), i32(amp_from), i32(1 if refine else 0), i64(plane),
                                                  acc))

    def _epie_flux_fit(self, far: Any, size: int, order: Any, s: int, m: int, amp: Any, amp_from: int) -> None:
        """ePIE step ``s``: fit c_j to the data from the far field at c = 1 (its first m planes), store it, and scale
        the ``size`` values of ``far`` (the step's spectra) by it."""
        n2 = self.n2
        sums, poisson = self.flux_sums[2 * s:], i32(1 if self._poisson else 0)
        rt.kernel("nf_epie_flux_sums")((min(FIT_BLOCKS, -(-n2 // rt.BLOCK)),), (rt.BLOCK,), (
            far, amp, *self.mask, order, i32(s), i32(n2), i32(m), f32(1.0 / self.n), i32(amp_from), poisson, sums))
        rt.launch("nf_epie_flux_scale", size, (far, i64(size), order, i32(s), poisson, sums,
                                               self.state.intensity_scale))

    def _normalise_flux(self, with_sums: bool, *arrays: tuple[Any, int]) -> None:
        """Divide the factors by their mean (after DM's fit from ``flux_sums`` when ``with_sums``) and multiply the
        probe, and each (array, size) of ``arrays`` (DM's moved probes), by it."""
        st = self.state
        rt.kernel("nf_flux_normalise")((1,), (1024,), (st.intensity_scale, i32(st.n_positions),
                                                       self.flux_sums if with_sums else self._null, self.flux_slot))
        for a, size in ((st.probe, int(st.probe.size)), *arrays):
            rt.launch("nf_scale_by_slot", size, (a, i64(size), self.flux_slot))
