"""The arithmetic of the fast LSQML's fits path (kernels/lsqml_fits.cu), transcribed into NumPy stage by stage,
equals the reference LSQML epoch by epoch: checked on the CPU, so that on the GPU only the CUDA transcription of
these stages is in question (tests/gpu/test_lsqml_fits.py).

The kernels reorganise the reference's update: unnormalised transforms with the orthonormal scale folded in; the
moved probes as inverse transforms of the probe's spectrum times each window's ramp; the probe gradients moved back
and summed in Fourier space; the position steps' numerators and the flux fit's inner products taken in Fourier
space (Parseval) inside the modulus stage; the Poisson step's Newton sums from the model intensities; the median of
the batch by rank; the affine drift from 2 x 2 normal equations (the centred start positions are orthogonal to
the offset). Each stage below names its kernel. One mini-batch an epoch: with several, rounding differences grow
by LSQML's own amplification (tests/gpu/test_cupy_matches_numpy.py), which is not what this test is about.

Both schedules of the sub-pixel path (gpu/lsqml_fits.py) are transcribed: "first" (ramps from the positions where
each kernel needs them, the probe update before the object update) and "fused" (the ramps from the batch's table
that lf_shift_tab writes, the unweighted moved-back sum inside lf_probe_reduce, and the probe's update chain on a
second stream: transcribed after the object update and the position move, the latest the stream may run it, so a
chain that read what those write would differ). Planted mistakes in the fused transcription must fail.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.simulate import simulate

N_SIZE = 32


def fft_un(a):  # cuFFT's forward transform: unnormalised
    return np.fft.fft2(a).astype(np.complex64)


def ifft_un(a):  # cuFFT's inverse transform: unnormalised (n^2 times NumPy's)
    return (np.fft.ifft2(a) * (a.shape[-1] * a.shape[-2])).astype(np.complex64)


def ramp(fraction, n):
    """lf_ramp: exp(-2 pi i (f_r k_r + f_c k_c)), k the fftfreq of each axis."""
    i = np.arange(n)
    k = (np.where(i <= (n - 1) // 2, i, i - n) / n).astype(np.float32)
    fr, fc = np.float32(fraction[0]), np.float32(fraction[1])
    return (np.exp(-2j * np.pi * (fr * k))[:, None] * np.exp(-2j * np.pi * (fc * k))[None, :]).astype(np.complex64)


def ramp_table(fractions, n):
    """lf_shift_tab's table (B, 2, n) complex64: lf_ramp_1d of each window's row fraction, then of its column one."""
    i = np.arange(n)
    k = (np.where(i <= (n - 1) // 2, i, i - n) / n).astype(np.float32)
    f = np.asarray(fractions, dtype=np.float32)
    return np.exp(-2j * np.pi * (f[:, :, None] * k[None, None])).astype(np.complex64)


def table_ramps(table, plant=None):
    """lf_ramp_tab: the row factor of pixel (y, x) times its column factor, (B, n, n)."""
    rows, cols = (table[:, 1], table[:, 0]) if plant == "table axes swapped" else (table[:, 0], table[:, 1])
    return rows[:, :, None] * cols[:, None, :]


def weigh_gradients(grads, pj, illum_w):
    """lf_weigh_gradients: the object's gradients ``grads`` times the share of the light the other windows bring,
    1 - sum_k |pj_k|^2 / illum clipped to [0, 1], with ``pj`` (..., M, n, n) the window's probe without its flux
    factor and ``illum_w`` (..., n, n) the summed probe intensity of every window over the window."""
    share = np.clip(1 - np.sum(np.abs(pj) ** 2, axis=-3) / (illum_w + 1e-30), 0, 1)
    return [d * share for d in grads]


def illumination(probe, rows, cols, shape):
    """lf_probe_intensity_max + lf_illumination + lf_illumination_map: (H, W) float32 sum_k |probe_k|^2 of every
    mode over the window of every corner, summed in the kernels' 64-bit fixed point (2^40 = the probe's largest
    intensity)."""
    n = probe.shape[-1]
    acc = np.zeros(shape, np.uint64)
    p2 = np.sum(np.abs(probe) ** 2, axis=0).astype(np.float32)
    smax = float(p2.max())
    q = np.rint(p2.astype(np.float64) * (2.0**40 / smax)).astype(np.uint64)
    for r, c in zip(rows, cols, strict=True):
        acc[r:r + n, c:c + n] += q
    return (acc.astype(np.float64) * (smax / 2.0**40)).astype(np.float32)


def windows(a, rows, cols, n):
    return np.stack([a[r:r + n, c:c + n] for r, c in zip(rows, cols, strict=True)])


def step(acc, jj, update_probe, which):
    """lf_step."""
    a11, a22, a12, y1, y2 = acc[jj, :5]
    if not update_probe:
        s = y1 / (a11 + 1e-30) if which == 0 else 0.0
    else:
        lam = 1e-6 * (a11 + a22) + 1e-30
        det = (a11 + lam) * (a22 + lam) - a12 * a12
        s = ((a22 + lam) * y1 - a12 * y2) / det if which == 0 else ((a11 + lam) * y2 - a12 * y1) / det
    return np.float32(min(max(s, 0.0), 2.0))


def fits_epoch(st, s, order, update_probe, refine, start, schedule="first", plant=None):
    """One epoch of LSQMLFitsMixin._launch_fits on a NumPy EngineState (one mini-batch), in the ``schedule``
    "first" or "fused" (module docstring), with an optional planted mistake; returns the error."""
    n, n2, m = st.size_px, st.size_px ** 2, st.modes_active
    pos, scale, shift = st.positions_px, st.intensity_scale, st.positions_px is not None
    hi = np.array([st.obj.shape[0] - n, st.obj.shape[1] - n], dtype=np.float64)
    idx = order
    cnt = len(idx)
    rows, cols = st.rows[idx], st.cols[idx]
    probe = st.probe[:m].copy()
    c = np.ones(cnt, np.float32) if scale is None else scale[idx].copy()
    fused, ramps = shift and schedule == "fused", None
    if fused:  # lf_shift_tab: the table of the fractions at the batch's start, the ramps as its products
        table = ramp_table(pos[idx] - np.stack([rows, cols], 1), n)
        ramps = table_ramps(table, plant)
    elif shift:  # lf_shift
        ramps = np.stack([ramp(f, n) for f in pos[idx] - np.stack([rows, cols], 1)])
    # the moved probes: inverse transforms of the probe's spectrum times the ramps
    pj = ifft_un(fft_un(probe)[None] * ramps[:, None] / n2) if shift else np.broadcast_to(probe[None], (cnt, m, n, n))
    lit_probe = pj * c[:, None, None, None]
    obj_w = windows(st.obj, rows, cols, n)
    acc = np.zeros((cnt, 17))
    x = fft_un(lit_probe * obj_w[:, None])  # lf_gather + forward transform
    s_ = np.sum(np.abs(x) ** 2, axis=1)
    model = np.sqrt(s_) / n
    amp = st.amplitudes[idx]
    error = np.sqrt(np.sum((model - amp) ** 2) / np.sum(amp ** 2))
    if refine:  # lf_illumination; lf_gather's moved exit waves, their spectra, lf_modulus's denominators
        own = pj * c[:, None, None, None] if plant == "own light with the flux factor" else pj
        grads = np.gradient(obj_w, axis=(1, 2))
        if plant != "steps not weighed":
            grads = weigh_gradients(grads, own, windows(illumination(st.probe, st.rows, st.cols, st.obj.shape),
                                                        rows, cols, n))
        d_r = fft_un(lit_probe * grads[0][:, None])
        d_c = fft_un(lit_probe * grads[1][:, None])
        cr = np.sum((np.conj(x) * d_r).real, axis=1)
        cc = np.sum((np.conj(x) * d_c).real, axis=1)
        inv_amp = np.where(model > 0, 1.0 / n2 / np.maximum(model, 1e-30), 0.0)
        acc[:, 7] = np.sum((cr * inv_amp) ** 2, axis=(1, 2))
        acc[:, 8] = np.sum((cc * inv_amp) ** 2, axis=(1, 2))
    acc[:, 10] = np.sum(s_, axis=(1, 2)) / n2
    if s.noise_model == "poisson":  # lf_modulus (model intensities), lf_poisson_newton x3, lf_poisson_apply
        mi, inten = model * model, amp * amp
        g = inten / (mi + 1e-12) - 1
        alpha = np.ones(cnt, np.float32)
        for _ in range(3):
            sg = np.maximum(1 + alpha[:, None, None] * g, 1e-3)
            d1 = np.sum(2 * mi * sg * g - 2 * inten * g / sg, axis=(1, 2))
            d2 = np.sum(2 * mi * g * g + 2 * inten * g * g / sg ** 2, axis=(1, 2))
            alpha = np.clip(alpha - d1 / np.maximum(d2, 1e-12), 0, 1).astype(np.float32)
        g = alpha[:, None, None] * g
    else:
        g = amp / (model + 1e-12) - 1
    acc[:, 9] = np.sum(s_ * g, axis=(1, 2)) / n2
    if refine:
        acc[:, 5] = np.sum(cr * g, axis=(1, 2)) / n2
        acc[:, 6] = np.sum(cc * g, axis=(1, 2)) / n2
    chi = ifft_un(x * (g / n2)[:, None])  # inverse transform
    num_o = np.zeros(st.obj.shape, np.complex64)  # lf_scatter
    den_o = np.zeros(st.obj.shape, np.float32)
    for jj, (r, q) in enumerate(zip(rows, cols, strict=True)):
        num_o[r:r + n, q:q + n] += np.sum(np.conj(lit_probe[jj]) * chi[jj], axis=0)
        den_o[r:r + n, q:q + n] += np.sum(np.abs(lit_probe[jj]) ** 2, axis=0)
    lit_obj = obj_w * c[:, None, None]
    add_o = s.delta_p * max(w.max() for w in windows(den_o, rows, cols, n))
    if update_probe:  # lf_probe_reduce (fused: with the unweighted moved-back sum), lf_gp_sum + inverse transform
        dp = np.sum(np.abs(lit_obj) ** 2, axis=0)
        grads = np.conj(lit_obj)[:, None] * chi
        if shift:  # the gradients' spectra, moved back by the conjugate ramps where they are summed
            grads = fft_un(grads)
            gp = ifft_un(np.sum(grads * np.conj(ramps)[:, None], axis=0) / n2)
        else:
            gp = np.sum(grads, axis=0)
        add_p = s.delta_p * dp.max()
    for jj, (r, q) in enumerate(zip(rows, cols, strict=True)):  # lf_dots
        a = (num_o[r:r + n, q:q + n] / (den_o[r:r + n, q:q + n] + add_o))[None] * lit_probe[jj]
        acc[jj, 0] = np.sum(np.abs(a) ** 2)
        acc[jj, 3] = np.sum((np.conj(a) * chi[jj]).real)
        if update_probe:
            b = lit_obj[jj][None] * gp / (dp + add_p)
            acc[jj, 1] = np.sum(np.abs(b) ** 2)
            acc[jj, 2] = np.sum((np.conj(a) * b).real)
            acc[jj, 4] = np.sum((np.conj(b) * chi[jj]).real)

    def probe_update(back):  # lf_gp_sum(weighted) + lf_probe_add with the ramps ``back``, or lf_probe_update
        weights = np.array([step(acc, jj, True, 1) for jj in range(cnt)])[:, None, None, None]
        if shift:
            total = ifft_un(np.sum(weights * grads * np.conj(back)[:, None], axis=0) / n2)
        else:
            total = np.sum(weights * grads, axis=0)
        st.probe[:m] = probe + s.beta_lsq / (dp + add_p) * total

    if update_probe and not fused:
        probe_update(ramps)
    for jj, (r, q) in enumerate(zip(rows, cols, strict=True)):  # lf_obj_update
        update = np.sum(np.conj(lit_probe[jj]) * chi[jj], axis=0)
        weight = s.beta_lsq * step(acc, jj, update_probe, 0)
        st.obj[r:r + n, q:q + n] += weight / (den_o[r:r + n, q:q + n] + add_o) * update
    if refine:  # lf_move: the batch's median by rank, damped steps, clipped
        den = acc[:, 7:9].astype(np.float32)
        moves = np.clip(acc[:, 5:7].astype(np.float32) / (den + np.median(den, axis=0) + 1e-30), -0.5, 0.5)
        pos[idx] = np.clip(pos[idx] + moves, 0, hi)
        st.rows[idx], st.cols[idx] = np.floor(pos[idx] + 0.5).astype(np.int64).T
    if update_probe and fused:  # the probe chain on the second stream, at the latest after the object chain
        moved = np.stack([ramp(f, n) for f in pos[idx] - np.stack([st.rows[idx], st.cols[idx]], 1)])
        probe_update(moved if plant == "ramps after the move" else table_ramps(table, plant))
    if refine:  # lf_epoch_end: the affine drift
        centred, corrections = start - start.mean(0), pos - start
        linear = np.linalg.solve(centred.T @ centred, centred.T @ corrections)
        pos[...] = np.clip(pos - (centred @ linear + corrections.mean(0)), 0, hi)
        corners = np.floor(pos + 0.5).astype(np.int64)
        st.rows[:], st.cols[:] = corners[:, 0], corners[:, 1]
    if scale is not None:
        scale[idx] = c * (1 + np.clip(acc[:, 9] / (acc[:, 10] + 1e-30), -0.2, 0.2)).astype(np.float32)
        scale /= np.float32(scale.mean())
    return error


OPTIONS = {
    "subpixel": dict(subpixel_windows=True),
    "positions": dict(position_refinement_from=2),
    "flux": dict(variable_intensity=True),
    "poisson": dict(noise_model="poisson"),
    "all": dict(subpixel_windows=True, position_refinement_from=2, variable_intensity=True, noise_model="poisson"),
}


def transcription_against_the_reference(option, schedule, plant=None):
    """Four epochs of the reference LSQML with ``option``, each mirrored by :func:`fits_epoch` from the same state:
    the largest (object, probe) relative differences, error difference, position (px) and factor differences."""
    sim = simulate(size_px=N_SIZE, scan_dims=(6, 6), photons=1e6, seed=1)
    n_pos = len(sim.data.positions_px)
    settings = EngineSettings(update_probe_from=2, phase_constraint=0, batch_size=n_pos, **OPTIONS[option])
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm="LSQML", iterations=4, device="cpu",
                         seed=0, beam_diameter_px=0.4 * N_SIZE, settings=settings)
    st = rec.state
    worst = np.zeros(5)
    for it in range(1, 5):
        copy = dataclasses.replace(st, obj=st.obj.copy(), probe=st.probe.copy(), rows=st.rows.copy(),
                                   cols=st.cols.copy(),
                                   positions_px=None if st.positions_px is None else st.positions_px.copy(),
                                   intensity_scale=None if st.intensity_scale is None else st.intensity_scale.copy())
        rng = np.random.default_rng()
        rng.bit_generator.state = st.rng.bit_generator.state
        metrics = rec.engine.iterate(it, update_probe=it >= 2)
        error = fits_epoch(copy, settings, rng.permutation(n_pos), it >= 2,
                           0 < settings.position_refinement_from <= it,
                           None if rec.engine.refiner is None else rec.engine.refiner.start_px, schedule, plant)
        now = [np.linalg.norm(copy.obj - st.obj) / np.linalg.norm(st.obj),
               np.linalg.norm(copy.probe - st.probe) / np.linalg.norm(st.probe),
               abs(error - metrics.error) / metrics.error, 0.0, 0.0]
        if st.positions_px is not None:
            now[3] = np.abs(copy.positions_px - st.positions_px).max()
            assert plant or (np.array_equal(copy.rows, st.rows) and np.array_equal(copy.cols, st.cols))
        if st.intensity_scale is not None:
            now[4] = np.abs(copy.intensity_scale - st.intensity_scale).max()
        worst = np.maximum(worst, now)
    if settings.position_refinement_from:
        assert np.abs(st.positions_px - sim.data.positions_px).max() > 1e-3  # the positions moved
    if settings.variable_intensity:
        assert np.abs(st.intensity_scale - 1).max() > 1e-3  # the factors moved
    return worst


TOLERANCES = (1e-5, 1e-5, 1e-5, 1e-4, 1e-5)  # object, probe, error (relative), positions px, factors


@pytest.mark.parametrize("schedule", ["first", "fused"])
@pytest.mark.parametrize("option", OPTIONS)
def test_the_fits_kernels_arithmetic_equals_the_reference_lsqml_epoch_by_epoch(option, schedule):
    worst = transcription_against_the_reference(option, schedule)
    assert np.all(worst <= TOLERANCES), worst


@pytest.mark.parametrize("plant", ["table axes swapped", "ramps after the move"])
def test_a_wrong_transcription_of_the_fused_schedule_fails_the_comparison(plant):
    """The comparison sees the fused schedule's two new hazards: a ramp table read with its axes confused, and a
    probe chain that took its ramps from the positions after the concurrent move instead of from the table."""
    worst = transcription_against_the_reference("all", "fused", plant)
    assert worst[1] > 100 * TOLERANCES[1], worst  # the probe, which the moved-back sums update


@pytest.mark.parametrize("plant", ["steps not weighed", "own light with the flux factor"])
def test_a_position_step_not_weighed_by_the_other_windows_light_as_the_reference_fails_the_comparison(plant):
    """The reference LSQML weighs its position steps' object gradients by the share of the light the other windows
    bring (position_update.others_light_share, the window's own probe taken without its flux factor), and so do
    lf_illumination + lf_gather: a transcription that does not, or counts the flux factor in the window's own
    light, moves the positions off the reference's."""
    worst = transcription_against_the_reference("all", "first", plant)
    assert worst[3] > 10 * TOLERANCES[3], worst  # the positions (measured 7.7e-2 and 3.1e-3 px)
