"""Far-field propagation: orthonormal 2-D FFTs over the last two axes (energy preserving)."""

from __future__ import annotations

from typing import Any


def forward(xp: Any, wave: Any) -> Any:
    """Far-field of exit waves (..., n, n): orthonormal FFT, zero frequency at [0, 0]."""
    return xp.fft.fft2(wave, norm="ortho")


def backward(xp: Any, field: Any) -> Any:
    """Exit waves from far fields (..., n, n): the inverse (and adjoint) of :func:`forward`."""
    return xp.fft.ifft2(field, norm="ortho")
