"""Mixed-state (incoherent) probe modes: orthogonalisation and seeding of extra modes."""

from __future__ import annotations

from typing import Any

import numpy as np


def orthogonalize_modes(xp: Any, probe: Any, return_transform: bool = False) -> Any:
    """Orthogonal modes spanning the same mixed state, sorted by decreasing power.

    probe: (M, n, n) complex64. The density matrix sum_k |P_k><P_k| is unchanged; the returned modes satisfy
    <P_i, P_j> = 0 for i != j. With ``return_transform`` also the unitary (M, M) matrix T with
    new_k = sum_l T[k, l] P_l, to apply the same change to anything linear in the modes (exit waves).
    """
    m = probe.shape[0]
    if m == 1:
        return (probe, xp.ones((1, 1), dtype=probe.dtype)) if return_transform else probe
    flat = probe.reshape(m, -1)
    gram = flat.conj() @ flat.T  # (M, M), gram[i, j] = <P_i, P_j>
    evals, evecs = xp.linalg.eigh(gram)
    order = xp.argsort(evals)[::-1]
    evecs = evecs[:, order]
    # eigenvectors are defined up to a phase: fix it (largest coefficient real and positive) so every platform
    # returns the same modes
    pivot = evecs[xp.argmax(xp.abs(evecs), axis=0), xp.arange(m)]
    evecs = evecs * (xp.conj(pivot) / xp.maximum(xp.abs(pivot), 1e-30))[None, :]
    transform = evecs.T.astype(probe.dtype)
    new = (transform @ flat).reshape(probe.shape).astype(probe.dtype)  # rows are orthogonal combinations
    return (new, transform) if return_transform else new


def rotate_mode_stack(xp: Any, waves: Any, transform: Any, chunk: int = 256) -> None:
    """In place: waves[j, k] <- sum_l transform[k, l] waves[j, l] for waves (N, M, n, n), ``chunk`` positions at a
    time so the temporary stays small."""
    m = transform.shape[0]
    for start in range(0, waves.shape[0], chunk):
        block = waves[start:start + chunk, :m]
        waves[start:start + chunk, :m] = xp.einsum("kl,jlxy->jkxy", transform, block)


def seed_extra_modes(xp: Any, probe: Any, rng: np.random.Generator, relative_power: float = 0.05) -> Any:
    """Fill modes 1..M-1 with weak (``relative_power`` of mode 0 each), distinct copies of mode 0.

    Each extra mode is mode 0 times a smooth random phase screen, then all modes are orthogonalised.
    """
    m, n, _ = probe.shape
    if m == 1:
        return probe
    out = probe.copy()
    p0 = probe[0]
    for k in range(1, m):
        # a low-order random phase screen: a few random linear and quadratic terms
        a, b, c, d = rng.normal(size=4)
        y, x = np.mgrid[0:n, 0:n] / n - 0.5
        screen = np.exp(1j * 2 * np.pi * (a * x + b * y + c * x * x + d * x * y)).astype(np.complex64)
        out[k] = p0 * xp.asarray(screen) * np.float32(np.sqrt(relative_power))
    return orthogonalize_modes(xp, out)
