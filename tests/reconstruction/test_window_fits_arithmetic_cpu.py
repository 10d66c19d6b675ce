"""The arithmetic of the fast ePIE's sub-pixel steps (gpu/window_fits.py, kernels/window_fits.cu), transcribed into
NumPy stage by stage, equals the reference ePIE epoch by epoch: checked on the CPU, so that on the GPU only the
CUDA transcription is in question (tests/gpu/test_window_fits.py).

The fast steps reorganise the reference's: the probe is kept as its unnormalised spectrum during the epoch, each
step's moved probe is the inverse transform of that spectrum times the position's ramp, the probe step goes back
into the spectrum through the conjugate ramp, and the position step's terms are taken in Fourier space (Parseval)
in the modulus stage (lf_modulus, shared with the fast LSQML). Each stage below names its kernel.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
from test_lsqml_fits_arithmetic_cpu import fft_un, ifft_un, ramp, weigh_gradients, windows

from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.engines.dm import REGULARISATION, set_position_step, set_step_cadence
from reconstruction.physics import modulus, propagation
from reconstruction.simulate import simulate

N_SIZE = 32


def epie_step_gradients(refiner, o, pj, r, c):
    """wf_epie_gather's gradients of the window o (n, n) at corner (r, c) for the step terms: weighed by the share
    of the light the other windows bring (1 - sum_k |pj_k|^2 / the refiner's illumination map) when the refiner
    weighs its steps (ePIE)."""
    grads = np.gradient(o)
    if refiner.weigh_steps:
        n = o.shape[-1]
        grads = weigh_gradients(grads, pj, refiner.step_illumination[r:r + n, c:c + n])
    return grads


def epie_windows_epoch(st, order, update_probe, refiner):
    """One epoch of EPIEWindowsMixin._launch_steps_windows on a NumPy EngineState; returns (sq_err, sq_amp)."""
    n, n2, m = st.size_px, st.size_px ** 2, st.modes_active
    pspec = fft_un(st.probe[:m])  # copy_c64 + forward transform
    terms = np.zeros((len(order), 4))  # LF_SLOTS 5-8 of each step: numerators, denominators (row, col)
    sq_err = sq_amp = 0.0
    for s, j in enumerate(order):
        r, c = int(st.rows[j]), int(st.cols[j])
        ramp_j = ramp(st.positions_px[j] - (r, c), n)
        pj = ifft_un(pspec * ramp_j / n2)  # lf_shift + inverse transform
        o = st.obj[r:r + n, c:c + n].copy()  # wf_epie_gather
        x = fft_un(pj * o)  # forward transform
        model = np.sqrt(np.sum(np.abs(x) ** 2, axis=0)) / n  # lf_modulus
        amp = st.amplitudes[j]
        sq_err += float(np.sum((model - amp) ** 2))
        sq_amp += float(np.sum(amp ** 2))
        g = amp / (model + 1e-12) - 1
        if refiner is not None:
            moves = [fft_un(pj * d) for d in epie_step_gradients(refiner, o, pj, r, c)]  # transformed with psi
            inv_amp = np.where(model > 0, 1.0 / n2 / np.maximum(model, 1e-30), 0.0)
            for ax, d in enumerate(moves):
                dots = np.sum((np.conj(x) * d).real, axis=0)
                terms[s, ax] = np.sum(dots * g) / n2
                terms[s, 2 + ax] = np.sum((dots * inv_amp) ** 2)
        diff = ifft_un(x * (g / n2))  # inverse transform: psi' - psi
        inv_mp = 1 / np.max(np.sum(np.abs(pj) ** 2, axis=0))  # wf_epie_update
        inv_mo = 1 / np.max(np.abs(o) ** 2)
        st.obj[r:r + n, c:c + n] = o + np.sum(np.conj(pj) * diff, axis=0) * inv_mp
        if update_probe:  # the step's transform + wf_spectrum_add
            pspec += fft_un(np.conj(o) * diff * inv_mo) * np.conj(ramp_j)
    if update_probe:  # copy_c64 + inverse transform + wf_scale_c64
        st.probe[:m] = ifft_un(pspec) / n2
    if refiner is not None:  # collect_step_terms, then the refiner's epoch end
        refiner.collect(order, terms[:, :2], terms[:, 2:])
        refiner.end_epoch()
    return sq_err, sq_amp


OPTIONS = {"subpixel": dict(subpixel_windows=True), "positions": dict(position_refinement_from=2)}


@pytest.mark.parametrize("option", OPTIONS)
def test_the_fast_epie_sub_pixel_steps_arithmetic_equals_the_reference_epie_epoch_by_epoch(option):
    """Each epoch from the reference's state. Tolerance: within one epoch ePIE's sequential steps amplify rounding
    (on NumPy alone a 1e-7 relative change of the data moves the probe by 7.6e-5 after its first updating epoch
    here, 8.5e-3 after three), so the transcription must agree to 2e-4 an epoch, not to float32 rounding."""
    sim = simulate(size_px=N_SIZE, scan_dims=(6, 6), photons=1e6, seed=1, jitter_px=0.4, subpixel=True)
    settings = EngineSettings(update_probe_from=2, phase_constraint=0, **OPTIONS[option])
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm="ePIE", iterations=4, device="cpu",
                         seed=0, beam_diameter_px=0.4 * N_SIZE, settings=settings)
    st = rec.state
    for it in range(1, 5):
        mirror = dataclasses.replace(st, obj=st.obj.copy(), probe=st.probe.copy(), rows=st.rows.copy(),
                                     cols=st.cols.copy(), positions_px=st.positions_px.copy())
        refiner = None
        if rec.engine.refiner is not None and rec.engine.refiner.refining(it):
            refiner = copy.copy(rec.engine.refiner)  # the reference's schedule, on the mirror's positions
            refiner.state, refiner._collected = mirror, []
            refiner.begin_epoch(mirror.lit_probes)
        rng = np.random.default_rng()
        rng.bit_generator.state = st.rng.bit_generator.state
        metrics = rec.engine.iterate(it, update_probe=it >= 2)
        sq_err, sq_amp = epie_windows_epoch(mirror, rng.permutation(st.n_positions), it >= 2, refiner)
        assert np.linalg.norm(mirror.obj - st.obj) <= 2e-4 * np.linalg.norm(st.obj), it
        assert np.linalg.norm(mirror.probe - st.probe) <= 2e-4 * np.linalg.norm(st.probe), it
        assert abs(np.sqrt(sq_err / sq_amp) - metrics.error) <= 1e-5 * metrics.error, it
        assert np.abs(mirror.positions_px - st.positions_px).max() <= 1e-4, it
        assert np.array_equal(mirror.rows, st.rows) and np.array_equal(mirror.cols, st.cols), it
    if settings.position_refinement_from:
        assert np.abs(st.positions_px - sim.data.positions_px).max() > 1e-3  # the positions moved


def dm_windows_iteration(st, psi, settings, update_probe, refiner):
    """One iteration of FastDM with DMWindowsMixin on NumPy arrays: the new stages transcribed (the moved-back probe
    sum, the moved probes, the step terms by Parseval, the exit waves following the moves), the plain DM stages by
    the reference's functions."""
    n, n2, m = st.size_px, st.size_px ** 2, st.modes_active
    rows, cols = st.rows, st.cols
    ramps = np.stack([ramp(f, n) for f in st.positions_px - np.stack([rows, cols], 1)])
    obj_w = windows(st.obj, rows, cols, n)
    if update_probe:  # dm_probe_partial/reduce (the denominator), wf_dm_conj_obj + transforms + lf_gp_sum + inverse
        den_p = np.sum(np.abs(obj_w) ** 2, axis=0)
        terms = fft_un(np.conj(obj_w)[:, None] * psi[:, :m]) * np.conj(ramps)[:, None]
        st.probe[:m] = ifft_un(np.sum(terms, axis=0) / n2) / (den_p + REGULARISATION * den_p.max())
    pj = ifft_un(fft_un(st.probe)[None] * ramps[:, None] / n2)  # lf_shift + inverse transforms (every mode)
    num = np.zeros(st.obj.shape, np.complex64)  # dm_scatter, dm_obj_divide
    den = np.zeros(st.obj.shape, np.float32)
    for j, (r, c) in enumerate(zip(rows, cols, strict=True)):
        num[r:r + n, c:c + n] += np.sum(np.conj(pj[j, :m]) * psi[j, :m], axis=0)
        den[r:r + n, c:c + n] += np.sum(np.abs(pj[j, :m]) ** 2, axis=0)
    st.obj[...] = num / (den + REGULARISATION * den.max())
    obj_w = windows(st.obj, rows, cols, n)
    phi = pj[:, :m] * obj_w[:, None]
    far = propagation.forward(np, 2 * phi - psi[:, :m])  # dm_reflect .. dm_psi_update (the plain DM's stages)
    factor = modulus.relaxed_modulus_factor(np, modulus.modal_amplitude(np, far), st.amplitudes, None,
                                            settings.dm_relax)
    psi[:, :m] += propagation.backward(np, far * factor[:, None]) - phi
    if refiner is not None:  # lf_gather (phi and its two moves), one transform, lf_modulus
        set_position_step(refiner, update_probe)  # as FastDM.iterate (the probe held or updated)
        x = fft_un(phi)
        model = np.sqrt(np.sum(np.abs(x) ** 2, axis=1)) / n
        g = st.amplitudes / (model + 1e-12) - 1
        inv_amp = np.where(model > 0, 1.0 / n2 / np.maximum(model, 1e-30), 0.0)
        nums, dens = [], []
        for grad in (np.gradient(obj_w, axis=1), np.gradient(obj_w, axis=2)):
            dots = np.sum((np.conj(x) * fft_un(pj[:, :m] * grad[:, None])).real, axis=1)
            nums.append(np.sum(dots * g, axis=(1, 2)) / n2)
            dens.append(np.sum((dots * inv_amp) ** 2, axis=(1, 2)))
        dm_end_refining_epoch(st, psi, phi, refiner, np.stack(nums, 1), np.stack(dens, 1), None)


def dm_end_refining_epoch(st, psi, phi, refiner, nums, dens, scales):
    """DMWindowsMixin._end_refining_epoch on NumPy arrays: psi - phi (wf_dm_phi_add, -1) and from its sums DM's memory
    share (the next epoch's step cadence), collect_step_terms, the refiner's epoch end, the memory psi - phi of moved
    windows rolled (FastDM._positions_moved), and phi added anew at each window's new place (wf_dm_phi_add, +1; lit by
    the amplitude factors ``scales`` (N,) when the run fits them)."""
    n, n2, m = st.size_px, st.size_px ** 2, st.modes_active
    psi[:, :m] -= phi
    share = np.sqrt(np.sum(np.abs(psi[:, :m]) ** 2)) / (np.sqrt(np.sum(np.abs(phi) ** 2)) + 1e-30)
    corners = np.stack([st.rows, st.cols], axis=1)
    refiner.collect(np.arange(st.n_positions), nums, dens)
    set_step_cadence(refiner, float(share))  # the next epoch's
    refiner.end_epoch()
    new_corners = np.stack([st.rows, st.cols], axis=1)
    jumps = corners - new_corners
    for j in np.nonzero(np.any(jumps != 0, axis=1))[0]:
        psi[j] = np.roll(psi[j], (int(jumps[j, 0]), int(jumps[j, 1])), axis=(-2, -1))
    moved = np.stack([ramp(f, n) for f in st.positions_px - new_corners])
    pj = ifft_un(fft_un(st.probe)[None] * moved[:, None] / n2)[:, :m]  # the moved probes at the new positions
    if scales is not None:
        pj = pj * scales[:, None, None, None]
    psi[:, :m] += pj * windows(st.obj, st.rows, st.cols, n)[:, None]  # phi follows the move


@pytest.mark.parametrize("option", OPTIONS)
def test_the_fast_dm_sub_pixel_arithmetic_equals_the_reference_dm_iteration_by_iteration(option):
    """Each iteration from the reference's state: object, probe and exit waves within 1e-4, positions 1e-4 px."""
    sim = simulate(size_px=N_SIZE, scan_dims=(6, 6), photons=1e6, seed=1, jitter_px=0.4, subpixel=True)
    settings = EngineSettings(update_probe_from=2, phase_constraint=0, **OPTIONS[option])
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm="DM", iterations=4, device="cpu",
                         seed=0, beam_diameter_px=0.4 * N_SIZE, settings=settings)
    st, eng = rec.state, rec.engine
    for it in range(1, 5):
        mirror = dataclasses.replace(st, obj=st.obj.copy(), probe=st.probe.copy(), rows=st.rows.copy(),
                                     cols=st.cols.copy(), positions_px=st.positions_px.copy())
        psi = eng.psi.copy()
        refiner = None
        if eng.refiner is not None and eng.refiner.refining(it):
            refiner = copy.copy(eng.refiner)
            refiner.state, refiner._collected = mirror, []
            refiner.begin_epoch(mirror.lit_probes)
        eng.iterate(it, update_probe=it >= 2)
        dm_windows_iteration(mirror, psi, settings, it >= 2, refiner)
        for got, want in ((mirror.obj, st.obj), (mirror.probe, st.probe), (psi, eng.psi)):
            assert np.linalg.norm(got - want) <= 1e-4 * np.linalg.norm(want), it
        assert np.abs(mirror.positions_px - st.positions_px).max() <= 1e-4, it
    if settings.position_refinement_from:
        assert np.abs(st.positions_px - sim.data.positions_px).max() > 1e-3  # the positions moved
