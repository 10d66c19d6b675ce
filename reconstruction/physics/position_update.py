"""Position correction: the per-position step, the coarse search, and the global affine fit of the scan.

Pure functions over batched ``xp`` arrays (NumPy or CuPy; no host round trips inside), shared by every engine that
refines positions (``engines/position_refiner.py`` drives them). Conventions: positions (B, 2) pixels (row, col)
of each window's top-left corner; window j covers object pixels p_j + y, y in [0, n)^2; probes (1 or B, M, n, n)
as they light each window (moved by the position's fraction, ``physics/subpixel.py``); windows (B, n, n) the object
windows; chi (B, M, n, n) the exit-wave update direction from the measured moduli (F^-1 of F psi (A / |F psi| - 1)
for the Gaussian model); far_model (B, M, n, n) the model's far fields F psi and model_amp (B, n, n) their modal
amplitude.

The three parts, and why (docs/parameters.md, "Position refinement"):

- **per-position step** (:func:`translation_terms`, :func:`damped_steps`): moving window j by d changes psi_j by
  d . P grad(O_j); its far-field modal amplitude changes by a_d = sum_k Re(conj(F psi_k) F(P d_O)) / |F psi|. Each
  axis' Gauss-Newton step fits a_d to the measured amplitude change: Re<P dO, chi> / ||a_d||^2, damped by the
  batch's median denominator (Levenberg-Marquardt), so windows with little structure barely move.
- **coarse search** (:func:`consensus_regions`, :func:`coarse_shift_scores`): errors of several pixels are outside
  the gradient's reach (the linearisation holds for a fraction of the object's feature size). Each window is tried
  at every whole-pixel shift within a radius against the object as the *other* windows see it (their exit waves
  projected on the measured moduli, overlapped; the window's own share taken out), and the shift whose far-field
  modal amplitude correlates best with the measured one wins. The measured data, not the exit-wave estimate, are
  compared, so the score does not inherit the window's current estimate. It needs a formed probe (docs).
- **global affine fit** (:func:`deformation_terms`, :func:`solve_deformation`): a scale or rotation error of the
  whole scan is nearly invisible to per-window translations (the object forms in the distorted frame and the
  windows agree with it), but not inside each window: there the data are the object seen through the probe's own,
  undistorted pixel grid, so the distortion shows as a stretch or turn of each window's content against the
  object. Fitting that (with each window's translation as a nuisance parameter, summed over all windows) gives the
  scan's affine error directly, to a fraction of a per cent; the engine then moves every position by it and
  resamples the object with it (:func:`resample_affine`). The user chooses which affine terms are free
  (:data:`AFFINE_TERMS`); the others are held, and their part of the per-position steps is removed
  (:func:`remove_affine_terms`). The same terms give a smooth warp beyond affine (:func:`solve_warp`: a polynomial
  displacement of the scan whose gradient each window's content shows; DM fits a cubic one, since its steps
  leave a smooth error its object follows).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import propagation

RADIAL_TERMS = 3  # far-field amplitude profile terms 1, k^2, k^4 fitted with the deformation (nuisance)
NUISANCE_TERMS = 3 + RADIAL_TERMS  # and the object's blur d2O/dr2, d2O/drdc, d2O/dc2
# the affine fit trusts the object where the summed probe intensity of all windows reaches this share of its
# maximum (:func:`trusted_object`; 64^2, 10 x 10, DM from the true positions, 100 iterations: the scale drifted to
# +1.34 % with none, +0.41 % with 1 %, +0.16 % with 3 %, +0.13 % with 10 %)
TRUST_FRACTION = 0.1

# the affine fit's trust: a fit that did not shrink by at least this share of the step applied after the one before
# has its next step halved (:func:`trusted_deformation`)
AFFINE_SHRINK_SHARE = 0.5

#: The affine terms of a scan's geometry a user may free or hold (``-positionAffine``); each is a 2 x 2 matrix
#: direction B in (row, col) pixels: a position p moves by B (p - centre). ``offset`` (a common shift) has none.
AFFINE_TERMS = ("scale", "asymmetry", "rotation", "shear", "offset")
_LINEAR_TERMS = {
    "scale": ((1.0, 0.0), (0.0, 1.0)),
    "asymmetry": ((1.0, 0.0), (0.0, -1.0)),
    "rotation": ((0.0, -1.0), (1.0, 0.0)),
    "shear": ((0.0, 1.0), (1.0, 0.0)),
}


# -- per-position step ------------------------------------------------------------------------------------------
def object_gradients(xp: Any, windows: Any) -> tuple[Any, Any]:
    """Central differences d/d(row), d/d(col) of (B, n, n) object windows (one-sided at the window's edges)."""
    return xp.gradient(windows, axis=1), xp.gradient(windows, axis=2)


def _inverse_amplitude(xp: Any, model_amp: Any) -> Any:
    return 1.0 / (model_amp + 1e-12 * xp.max(model_amp) + 1e-30)


def _amplitude_change(xp: Any, change: Any, far_model: Any, inv_amp: Any) -> Any:
    """(B, n, n) first-order change of the modal far-field amplitude when the exit waves change by ``change``."""
    d_far = propagation.forward(xp, change)
    return xp.sum((far_model.conj() * d_far).real, axis=1) * inv_amp


def translation_terms(xp: Any, probes: Any, windows: Any, chi: Any, far_model: Any, model_amp: Any,
                      weights: Any = None) -> tuple[Any, Any]:
    """(B, 2) numerators Re<P dO_axis, chi> and (B, 2) denominators ||a_axis||^2 of each position's Gauss-Newton
    step along (row, col); the step is their ratio (:func:`damped_steps`). ``weights`` (B, n, n) (or None: 1)
    multiplies the object's gradients (:func:`others_light_share`)."""
    inv_amp = _inverse_amplitude(xp, model_amp)
    nums, dens = [], []
    for d_obj in object_gradients(xp, windows):
        if weights is not None:
            d_obj = d_obj * weights
        change = probes * d_obj[:, None]  # (B, M, n, n)
        nums.append(xp.sum((change.conj() * chi).real, axis=(1, 2, 3)))
        d_amp = _amplitude_change(xp, change, far_model, inv_amp)
        dens.append(xp.sum(d_amp * d_amp, axis=(1, 2)))
    return xp.stack(nums, axis=1), xp.stack(dens, axis=1)


def damped_steps(xp: Any, num: Any, den: Any, damping: float = 1.0) -> Any:
    """(B, 2) float32 steps num / (den + damping * median(den) over the B positions, per axis). ``damping`` 0 gives
    the plain Gauss-Newton step; 1 (the engines' choice) holds back windows whose object holds little structure,
    or which little else overlaps: undamped, such positions drifted by 3-5 px on a scan with little overlap."""
    return (num / (den + damping * xp.median(den, axis=0)[None] + 1e-30)).astype(xp.float32)


def others_light_share(xp: Any, probes: Any, illumination: Any) -> Any:
    """(B, n, n) float32 the share of the light at each pixel of B windows that the other windows bring:
    1 - sum_k |P_jk|^2 / I, clipped to [0, 1], with ``probes`` (B, M, n, n) as they light each window and
    ``illumination`` (B, n, n) the summed probe intensity of all windows there (``engines/base.object_illumination``'s
    windows). The per-position step weighs the object's gradients by it: where the window alone lights the object
    (beyond the scan's rim, or where little else overlaps), the object holds the window's own data at its current
    place, and its gradient there pulls the window to stay."""
    own = xp.sum(probes.real**2 + probes.imag**2, axis=1)
    return xp.clip(1.0 - own / (illumination + 1e-30), 0.0, 1.0).astype(xp.float32)


def position_steps_px(xp: Any, probes: Any, windows: Any, chi: Any, far_model: Any, model_amp: Any,
                      damping: float = 1.0) -> Any:
    """(B, 2) float32 damped Gauss-Newton steps (row, col) in pixels of the B positions (one batch; shapes in the
    module's docstring): :func:`translation_terms` then :func:`damped_steps`."""
    num, den = translation_terms(xp, probes, windows, chi, far_model, model_amp)
    return damped_steps(xp, num, den, damping)


# -- coarse search ----------------------------------------------------------------------------------------------
def search_shifts(xp: Any, radius_px: int) -> Any:
    """(K, 2) int64 whole-pixel shifts (row, col) within ``radius_px`` on each axis, (0, 0) first."""
    r = xp.arange(-radius_px, radius_px + 1, dtype=xp.int64)
    grid = xp.stack(xp.meshgrid(r, r, indexing="ij"), axis=-1).reshape(-1, 2)
    first = xp.all(grid == 0, axis=1)
    return xp.concatenate([grid[first], grid[~first]], axis=0)


def region_indices(xp: Any, shape: tuple[int, int], rows: Any, cols: Any, size_px: int) -> Any:
    """(B, size_px, size_px) flat indices of the squares of ``size_px`` whose top-left corners are ``rows``,
    ``cols`` (B,) in an object of ``shape`` (indices clipped to the object)."""
    h, w = shape
    ar = xp.arange(size_px, dtype=xp.int64)
    r = xp.clip(rows.astype(xp.int64)[:, None, None] + ar[None, :, None], 0, h - 1)
    c = xp.clip(cols.astype(xp.int64)[:, None, None] + ar[None, None, :], 0, w - 1)
    return r * w + c


def search_inside(xp: Any, shape: tuple[int, int], rows: Any, cols: Any, n: int, shifts: Any) -> Any:
    """(B, K) True where the window at ``rows``, ``cols`` (B,) moved by each of ``shifts`` (K, 2) stays inside."""
    r = rows[:, None] + shifts[None, :, 0]
    c = cols[:, None] + shifts[None, :, 1]
    return (r >= 0) & (c >= 0) & (r <= shape[0] - n) & (c <= shape[1] - n)


def consensus_regions(xp: Any, num: Any, den: Any, own_num: Any, own_den: Any, rows: Any, cols: Any,
                      radius_px: int, regularisation: float = 1e-3, prior: Any = None) -> Any:
    """(B, n + 2R, n + 2R) complex64 the object around each of B windows as all the other windows see it:
    (num - own_num) / (den - own_den + regularisation max(den)), with num (H, W) = sum_j conj(P_j) psi_j and
    den (H, W) = sum_j |P_j|^2 over all windows (psi_j their exit waves projected on the measured moduli) and the
    window's own terms own_num, own_den (B, n, n) taken out (the window at offset (R, R) of its region). Without
    this, a window's own data, already written into the object where it sits, make its current place win the
    search (measured: 98 % stayed put on ePIE at iteration 10 with +-3 px errors).

    ``prior`` (H, W) (or None: 0): what the region falls back to where the other windows light it little,
    (num - own_num + reg prior) / (den - own_den + reg), reg = regularisation max(den). The refiner passes the
    current object: beyond the scan's rim the light is the window's own, and a consensus faded to 0 there made the
    edge windows move inwards, out of the dark (128^2, 12 x 12, probe known: 28 % of the edge windows' first moves
    were wrong, 13 % inside)."""
    n = own_num.shape[-1]
    r = radius_px
    idx = region_indices(xp, num.shape, rows - r, cols - r, n + 2 * r)
    region_num = num.ravel()[idx]
    region_den = den.ravel()[idx]
    region_num[:, r:r + n, r:r + n] -= own_num
    region_den[:, r:r + n, r:r + n] -= own_den
    weight = regularisation * xp.max(den)
    if prior is not None:  # where the other windows light the object little, it falls back to the prior
        region_num = region_num + weight * prior.ravel()[idx]
    return (region_num / (xp.maximum(region_den, 0) + weight)).astype(xp.complex64)


def coarse_shift_scores(xp: Any, regions: Any, probes: Any, amplitudes: Any, valid: Any | None, shifts: Any
                        ) -> Any:
    """(B, K) score of each of B windows moved by each of the K whole-pixel ``shifts`` (K, 2) (|shift| <= R):
    the correlation sum(a A) / ||a|| of the far-field modal amplitude a of the probes (B, M, n, n) times the object
    there, taken from ``regions`` (B, n + 2R, n + 2R) around each window (the window at offset (R, R)), with the
    measured amplitudes A (B, n, n) over valid pixels (``valid`` None, (n, n) or (B, n, n)). Independent of the
    overall intensity scale; the largest score wins (mask the shifts that leave the object: :func:`search_inside`)."""
    n = amplitudes.shape[-1]
    r = (regions.shape[-1] - n) // 2
    ar = xp.arange(n, dtype=xp.int64)
    rr = (r + shifts[:, 0])[:, None, None] + ar[None, :, None]  # (K, n, 1)
    cc = (r + shifts[:, 1])[:, None, None] + ar[None, None, :]  # (K, 1, n)
    windows = regions[:, rr, cc]  # (B, K, n, n)
    psi = probes[:, None] * windows[:, :, None]  # (B, K, M, n, n)
    amp = xp.sqrt(xp.sum(xp.abs(propagation.forward(xp, psi)) ** 2, axis=2))  # (B, K, n, n)
    measured = amplitudes[:, None]
    if valid is not None:
        mask = valid[:, None] if valid.ndim == 3 else valid[None, None]
        amp = xp.where(mask, amp, 0)
        measured = xp.where(mask, measured, 0)
    return xp.sum(amp * measured, axis=(-2, -1)) / xp.sqrt(xp.sum(amp * amp, axis=(-2, -1)) + 1e-30)


# -- global affine fit -----------------------------------------------------------------------------------------
def probe_centre_px(xp: Any, probe: Any) -> Any:
    """(2,) float64 intensity centroid (row, col) of the probe modes (M, n, n) inside its window."""
    n = probe.shape[-1]
    p2 = xp.sum(probe.real**2 + probe.imag**2, axis=0).astype(xp.float64)
    total = xp.sum(p2) + 1e-30
    ar = xp.arange(n, dtype=xp.float64)
    return xp.stack([xp.sum(p2.sum(axis=1) * ar) / total, xp.sum(p2.sum(axis=0) * ar) / total])


def trusted_object(xp: Any, illumination: Any, fraction: float | None = None) -> Any:
    """(H, W) float32 1 where the object's ``illumination`` (H, W) (the summed probe intensity of all windows)
    reaches ``fraction`` (default :data:`TRUST_FRACTION`) of its maximum, else 0: where the model knows the object.
    The affine fit weighs the object's gradients by it (:func:`deformation_terms`)."""
    f = TRUST_FRACTION if fraction is None else fraction
    return (illumination >= f * xp.max(illumination)).astype(xp.float32)


def deformation_terms(xp: Any, probes: Any, windows: Any, chi: Any, far_model: Any, model_amp: Any,
                      centre_px: Any, weights: Any = None) -> tuple[Any, Any]:
    """Per window the (B, 12, 12) Gauss-Newton matrix and (B, 12) right-hand side of: its translation (row, col);
    the four entries D[a, b] (rr, rc, cr, cc) of a deformation that moves the window's content at y by
    D (y - centre_px) (psi changes by P (y_b - centre_b) d_a O); and :data:`NUISANCE_TERMS` terms that model errors
    look like: a blur of the object (P d_a d_b O) and a radial profile of the far-field amplitude (1, k^2, k^4
    times it). The translations are each window's own; D and the nuisance terms are common to all
    (:func:`solve_deformation`). Without the nuisance terms an unconverged model biased the scale: a blur of
    0.5 px read as a 0.95 % stretch (0.19 % with them), and a reconstruction with +-3 px errors removed and the
    probe known ended 0.27 % too large (0.08 % with them).

    ``weights`` (B, n, n) (or None: 1) multiplies the object's gradients of each window: the engines pass
    :func:`trusted_object`'s windows. Beyond the scan's well-lit area DM's object fades to 0 (its regularised
    average) and ePIE's holds its start: the probe's tails there light an edge the data do not show, and the
    stretch terms, which grow with the distance from the window's centre, read it as a shrink of the content. With
    the true positions, DM's object read -0.40 % / -0.49 % (rows / columns) and ePIE's -0.25 % / -0.24 % (64^2,
    10 x 10, after 40 iterations; LSQML's -0.03 % / -0.01 %, the true object's -0.01 % / -0.02 %); the object
    replaced by the truth where the illumination is below 1 % of its maximum: -0.05 % / -0.08 %; the gradients
    weighted by the 10 % trusted area: no drift."""
    inv_amp = _inverse_amplitude(xp, model_amp)
    n = windows.shape[-1]
    y = xp.arange(n, dtype=xp.float32)
    yr = (y - centre_px[0].astype(xp.float32))[:, None]  # (n, 1)
    yc = (y - centre_px[1].astype(xp.float32))[None, :]  # (1, n)
    d_row, d_col = object_gradients(xp, windows)
    blur = [xp.gradient(d_row, axis=1), xp.gradient(d_row, axis=2), xp.gradient(d_col, axis=2)]
    if weights is not None:
        d_row, d_col = d_row * weights, d_col * weights
        blur = [b * weights for b in blur]
    fields = [d_row, d_col, d_row * yr, d_row * yc, d_col * yr, d_col * yc] + blur
    d_amps, rhs = [], []
    for f in fields:
        change = probes * f[:, None]
        rhs.append(xp.sum((change.conj() * chi).real, axis=(1, 2, 3)))
        d_amps.append(_amplitude_change(xp, change, far_model, inv_amp).reshape(windows.shape[0], -1))
    # a radial profile of the far-field amplitude, a (1, k^2, k^4) with k the spatial frequency over Nyquist: the
    # measured-minus-model amplitude change is chi's far field seen through the model's phase
    k = xp.fft.fftfreq(n).astype(xp.float32)
    k2 = (k[:, None] ** 2 + k[None, :] ** 2) * 4.0
    amp_change = xp.sum((far_model.conj() * propagation.forward(xp, chi)).real, axis=1) * inv_amp
    for m in range(RADIAL_TERMS):
        f = model_amp * k2**m
        d_amps.append(f.reshape(windows.shape[0], -1))
        rhs.append(xp.sum(f * amp_change, axis=(1, 2)))
    a = xp.stack(d_amps, axis=1)  # (B, 6 + NUISANCE_TERMS, n*n)
    gram = xp.einsum("bkp,blp->bkl", a, a)
    return gram, xp.stack(rhs, axis=1)


def linear_term_basis(xp: Any, terms: tuple[str, ...]) -> Any:
    """(4, K) columns: the flattened (rr, rc, cr, cc) 2 x 2 matrix of each linear term in ``terms`` (offset has
    none), in :data:`AFFINE_TERMS` order."""
    cols = [_LINEAR_TERMS[t] for t in AFFINE_TERMS if t in terms and t in _LINEAR_TERMS]
    if not cols:
        return xp.zeros((4, 0), dtype=xp.float64)
    return xp.asarray([[v for row in m for v in row] for m in cols], dtype=xp.float64).T


def _window_deformation_sums(xp: Any, gram: Any, rhs: Any, min_weight: float) -> tuple[Any, Any, Any]:
    """Each window's translation eliminated from its :func:`deformation_terms` (B, K, K), (B, K) (Schur
    complement): (B, K - 2, K - 2) matrices, (B, K - 2) right-hand sides and (B,) weights (0 for windows whose
    translation block is below ``min_weight`` times the median: too little structure)."""
    g = gram.astype(xp.float64)
    b = rhs.astype(xp.float64)
    g_tt = g[:, :2, :2]
    strength = g_tt[:, 0, 0] + g_tt[:, 1, 1]
    keep = strength > min_weight * xp.median(strength)
    g_tt = g_tt + (1e-9 * strength + 1e-30)[:, None, None] * xp.eye(2)[None]
    g_td = g[:, :2, 2:]
    solve_td = xp.linalg.solve(g_tt, g_td)  # (B, 2, 4)
    solve_tb = xp.linalg.solve(g_tt, b[:, :2, None])[..., 0]  # (B, 2)
    g_dd = g[:, 2:, 2:] - xp.einsum("bki,bkj->bij", g_td, solve_td)
    b_d = b[:, 2:] - xp.einsum("bki,bk->bi", g_td, solve_tb)
    return g_dd, b_d, keep.astype(xp.float64)


def solve_deformation(xp: Any, gram: Any, rhs: Any, terms: tuple[str, ...], min_weight: float = 1e-3) -> Any:
    """(2, 2) float64 common deformation D of all windows from their :func:`deformation_terms` (B, K, K), (B, K):
    each window's translation is eliminated (Schur complement), the rest summed over windows and solved for the
    free linear ``terms`` (a held term stays 0) together with the nuisance terms. Windows whose translation block
    is below ``min_weight`` times the median carry too little structure and are left out."""
    basis = linear_term_basis(xp, terms)  # (4, K)
    if basis.shape[1] == 0:
        return xp.zeros((2, 2), dtype=xp.float64)
    g_dd, b_d, w = _window_deformation_sums(xp, gram, rhs, min_weight)
    g_sum = xp.einsum("b,bij->ij", w, g_dd)
    b_sum = xp.einsum("b,bi->i", w, b_d)
    k = basis.shape[1]
    extra = g_sum.shape[0] - 4  # NUISANCE_TERMS
    full = xp.zeros((g_sum.shape[0], k + extra), dtype=xp.float64)  # the free terms, then the nuisance terms
    full[:4, :k] = basis
    full[4:, k:] = xp.eye(extra)
    normal = full.T @ g_sum @ full
    normal = normal + 1e-9 * xp.trace(normal) / (k + extra) * xp.eye(k + extra)
    q = xp.linalg.solve(normal, full.T @ b_sum)
    return (basis @ q[:k]).reshape(2, 2)


def trusted_deformation(xp: Any, fitted: Any, last_fitted: Any, last_step: Any, trust: float
                        ) -> tuple[Any, float]:
    """(the (2, 2) step to apply, the trust kept for the next epoch): the ``fitted`` deformation (2, 2) scaled so
    its largest entry is at most ``trust``. A deformation that is in the scan leaves the fit once applied: the next
    fit is smaller by about the step taken. One that stays, smaller by less than :data:`AFFINE_SHRINK_SHARE` of
    ``last_step`` (2, 2) than ``last_fitted`` (2, 2), is a model error the scan cannot remove (a held probe of the
    wrong size reads as a stretch: 64^2, probe guessed from the data, the fitted scale stayed at -0.3 % an epoch
    and the scan drifted to 1.18): the trust is halved below that step, for the rest of the fit. ``last_fitted``
    None (the first fit): the trust as it is. Host scalars: a few of them, once an epoch."""
    if last_fitted is not None and last_step is not None:
        shrink = float(xp.linalg.norm(last_fitted)) - float(xp.linalg.norm(fitted))
        if shrink < AFFINE_SHRINK_SHARE * float(xp.linalg.norm(last_step)):
            trust = min(trust, 0.5 * float(xp.max(xp.abs(last_step))))
    largest = float(xp.max(xp.abs(fitted)))
    return (fitted * min(1.0, trust / largest) if largest > 0 else fitted), trust


# -- a smooth warp of the scan beyond affine (DM) ----------------------------------------------------------------
def warp_exponents(degree: int) -> list[tuple[int, int]]:
    """Exponents (i, k) of the monomials s_row^i s_col^k of total degree 2 .. ``degree`` that a smooth warp of the
    scan adds to the affine terms (none for ``degree`` <= 1)."""
    return [(i, d - i) for d in range(2, degree + 1) for i in range(d, -1, -1)]


def warp_jacobians(xp: Any, centres_px: Any, origin_px: Any, scale_px: float, degree: int) -> Any:
    """(B, 4, K) float64 the in-window deformation (rr, rc, cr, cc: d u_a / d x_b) at the B window centres
    ``centres_px`` (B, 2) per unit of each of the K = 2 M warp coefficients, column 2 m + a for monomial m of
    :func:`warp_exponents` moving axis a: u_a(x) = sum_m c[m, a] s_row^i s_col^k, s = (x - origin_px) / scale_px."""
    s = (centres_px - origin_px[None]) / scale_px
    exps = warp_exponents(degree)
    jac = xp.zeros((centres_px.shape[0], 4, 2 * len(exps)), dtype=xp.float64)
    for m, (i, k) in enumerate(exps):
        d_row = i * s[:, 0] ** max(i - 1, 0) * s[:, 1] ** k / scale_px
        d_col = k * s[:, 0] ** i * s[:, 1] ** max(k - 1, 0) / scale_px
        for a in range(2):
            jac[:, 2 * a, 2 * m + a] = d_row
            jac[:, 2 * a + 1, 2 * m + a] = d_col
    return jac


def warp_monomials(xp: Any, points_px: Any, origin_px: Any, scale_px: float, degree: int) -> Any:
    """(P, M) the monomials of :func:`warp_exponents` at ``points_px`` (P, 2), s = (x - origin_px) / scale_px."""
    s = (points_px - origin_px[None]) / scale_px
    return xp.stack([s[:, 0] ** i * s[:, 1] ** k for i, k in warp_exponents(degree)], axis=1)


def solve_warp(xp: Any, gram: Any, rhs: Any, terms: tuple[str, ...], jacobians: Any, min_weight: float = 1e-3
               ) -> tuple[Any, Any]:
    """:func:`solve_deformation` with a smooth warp: each window's deformation is the common affine D (the free
    linear ``terms``) plus the warp's at its centre, ``jacobians`` (B, 4, K) (:func:`warp_jacobians`); solved
    together with the nuisance terms over all windows. ((2, 2) D, (K // 2, 2) warp coefficients c[m, a]),
    float64."""
    basis = linear_term_basis(xp, terms)  # (4, k_a)
    g_dd, b_d, w = _window_deformation_sums(xp, gram, rhs, min_weight)
    n_b, k_a, k_w = jacobians.shape[0], basis.shape[1], jacobians.shape[2]
    extra = g_dd.shape[1] - 4  # NUISANCE_TERMS
    size = k_a + k_w + extra
    design = xp.zeros((n_b, 4 + extra, size), dtype=xp.float64)  # per window: the unknowns -> its 4 + extra terms
    design[:, :4, :k_a] = basis[None]
    design[:, :4, k_a:k_a + k_w] = jacobians
    design[:, 4:, k_a + k_w:] = xp.eye(extra)[None]
    normal = xp.einsum("b,bki,bkl,blj->ij", w, design, g_dd, design)
    normal = normal + 1e-9 * xp.trace(normal) / size * xp.eye(size)
    q = xp.linalg.solve(normal, xp.einsum("b,bki,bk->i", w, design, b_d))
    return (basis @ q[:k_a]).reshape(2, 2), q[k_a:k_a + k_w].reshape(-1, 2)


def affine_columns(xp: Any, start_px: Any, terms: tuple[str, ...]) -> Any:
    """(N, 2, K) how each of the N ``start_px`` positions (N, 2) moves per unit of each term in ``terms``
    (:data:`AFFINE_TERMS` order; ``offset`` gives two columns, row and col), about their mean."""
    centred = start_px - xp.mean(start_px, axis=0)[None]
    cols = []
    for t in AFFINE_TERMS:
        if t not in terms:
            continue
        if t == "offset":
            n = start_px.shape[0]
            cols.append(xp.stack([xp.ones(n), xp.zeros(n)], axis=1).astype(start_px.dtype))
            cols.append(xp.stack([xp.zeros(n), xp.ones(n)], axis=1).astype(start_px.dtype))
        else:
            m = xp.asarray(_LINEAR_TERMS[t], dtype=start_px.dtype)
            cols.append(centred @ m.T)
    if not cols:
        return xp.zeros(start_px.shape + (0,), dtype=start_px.dtype)
    return xp.stack(cols, axis=2)


def small_lstsq(xp: Any, a: Any, b: Any) -> Any:
    """The least-squares solution x of a (R, K) x = b, b (R,) or (R, C), for a small system (K a few affine terms),
    solved on the host in float64 and returned as an ``xp`` array: on CuPy, ``lstsq`` is an SVD through cuSOLVER
    with its synchronisations and about twenty launches, far more than copying R x (K + C) numbers there and back.
    The NumPy path is NumPy's own ``lstsq``, unchanged."""
    a_host = a.get() if hasattr(a, "get") else np.asarray(a)
    b_host = b.get() if hasattr(b, "get") else np.asarray(b)
    return xp.asarray(np.linalg.lstsq(a_host, b_host, rcond=None)[0])


def remove_affine_terms(xp: Any, start_px: Any, positions_px: Any, held: tuple[str, ...]) -> Any:
    """(N, 2) ``positions_px`` with the ``held`` terms' part of their corrections since ``start_px`` removed: the
    corrections are fitted by all affine terms at once (so the terms are not confused with each other) and the
    held ones' share subtracted. All terms held: the corrections keep no affine part (the scan's geometry as
    given); none held: the positions unchanged."""
    if not held:
        return positions_px
    cols = affine_columns(xp, start_px, AFFINE_TERMS)  # (N, 2, 6)
    design = cols.reshape(-1, cols.shape[2])
    coef = small_lstsq(xp, design, (positions_px - start_px).reshape(-1))
    mask = xp.asarray([t in held for t in AFFINE_TERMS for _ in range(2 if t == "offset" else 1)])
    return positions_px - (design @ xp.where(mask, coef, 0.0)).reshape(positions_px.shape)


def fit_affine(xp: Any, start_px: Any, positions_px: Any) -> tuple[Any, Any]:
    """The affine map positions ~ L (start - m) + m + t that fits (N, 2) ``positions_px`` best (least squares),
    with m the mean of ``start_px``: ((2, 2) L, (2,) t), float64."""
    m = xp.mean(start_px, axis=0)
    design = xp.concatenate([start_px - m[None], xp.ones((start_px.shape[0], 1), dtype=start_px.dtype)], axis=1)
    coef = small_lstsq(xp, design, positions_px - m[None])  # (3, 2)
    return coef[:2].T, coef[2]


def describe_affine(xp: Any, linear: Any) -> dict[str, float]:
    """Scale (sqrt det), asymmetry (row over col scale - 1), rotation (degrees, from its antisymmetric part: a
    positive angle turns +row towards +col... i.e. (1, 0) to (cos, sin)) and shear (the symmetric off-diagonal part)
    of a (2, 2) matrix in (row, col), for reports."""
    lin = [[float(v) for v in row] for row in (linear.tolist() if hasattr(linear, "tolist") else linear)]
    (a, b), (c, d) = lin
    det = a * d - b * c
    return {"scale": math.sqrt(abs(det)), "asymmetry": a / d - 1.0 if d else 0.0,
            "rotation_deg": math.degrees(math.atan2(c - b, a + d)), "shear": (b + c) / 2.0}


def resample_affine(xp: Any, obj: Any, matrix: Any, centre_px: Any) -> Any:
    """(H, W) complex64 O_new(x) = O(centre + matrix (x - centre)) by Keys cubic interpolation (edge values
    repeated). ``matrix`` (2, 2), ``centre_px`` (2,) (row, col)."""
    h, w = obj.shape
    rr = xp.arange(h, dtype=xp.float64)[:, None] - centre_px[0]
    cc = xp.arange(w, dtype=xp.float64)[None, :] - centre_px[1]
    src_r = centre_px[0] + matrix[0, 0] * rr + matrix[0, 1] * cc
    src_c = centre_px[1] + matrix[1, 0] * rr + matrix[1, 1] * cc
    return resample_at(xp, obj, src_r, src_c)


def resample_at(xp: Any, obj: Any, src_r: Any, src_c: Any) -> Any:
    """(H, W) complex64 O_new[x] = O(src_r[x], src_c[x]) (sources (H, W) float64 pixels (row, col)) by Keys cubic
    interpolation (edge values repeated)."""
    h, w = obj.shape
    r0 = xp.floor(src_r).astype(xp.int64)
    c0 = xp.floor(src_c).astype(xp.int64)
    fr = (src_r - r0).astype(xp.float32)
    fc = (src_c - c0).astype(xp.float32)
    flat = obj.ravel()
    out = xp.zeros((h, w), dtype=xp.complex64)
    for i in range(-1, 3):
        wr = _keys(xp, fr - i)
        ri = xp.clip(r0 + i, 0, h - 1)
        for j in range(-1, 3):
            ci = xp.clip(c0 + j, 0, w - 1)
            out += (wr * _keys(xp, fc - j)) * flat[ri * w + ci]
    return out


def _keys(xp: Any, t: Any) -> Any:
    """Keys' cubic convolution kernel (a = -0.5) at distances ``t``."""
    t = xp.abs(t)
    near = (1.5 * t - 2.5) * t * t + 1.0
    far = ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0
    return xp.where(t <= 1, near, xp.where(t < 2, far, 0.0)).astype(xp.float32)
