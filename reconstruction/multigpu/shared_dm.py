"""Difference map over regions with summed overlap projections: the split run equals the one-device run.

DM's overlap projection is a ratio of sums over positions (object: sum conj(P) psi_j / sum |P|^2, probe:
sum conj(O_j) psi_j / sum |O_j|^2). Each region holds only the positions it owns; summing the numerators and
denominators over the regions (one all-reduce each, the object's in global coordinates) gives every region
the global values on its window, so each iteration is the one-device iteration, up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engines.base import EngineSettings, EngineState
from ..engines.dm import DM, error_sample
from .exchange import Communicator
from .partition import Window


@dataclass(frozen=True)
class Link:
    """Where a region sits among the others: its communicator rank, object window and positions (global
    indices of its local positions, in order, out of ``n_global``)."""

    comm: Communicator
    rank: int
    window: Window
    global_shape: tuple[int, int]
    global_ids: np.ndarray
    n_global: int


class SharedDM(DM):
    """The reference DM with its two sums all-reduced across regions (see the module docstring)."""

    name = "DM"

    def __init__(self, state: EngineState, settings: EngineSettings, link: Link):
        super().__init__(state, settings)
        self.link = link

    @classmethod
    def adopt(cls, engine: DM, link: Link) -> SharedDM:
        """A SharedDM continuing the reference DM ``engine`` (its state and exit waves, no copy)."""
        if type(engine) is not DM:
            raise TypeError(f"expected the reference DM engine, got {type(engine).__name__}")
        shared = cls.__new__(cls)
        shared.__dict__.update(engine.__dict__)  # its state, settings, exit waves and window probes, shared
        shared.link = link
        return shared

    def _error_sample(self, iteration: int) -> np.ndarray:
        """This region's positions in the one-device run's error sample, so the summed errors are that run's."""
        wanted = error_sample(self.link.n_global, iteration)
        return np.flatnonzero(np.isin(self.link.global_ids, wanted))

    def _object_sums(self, num: Any, den: Any) -> tuple[Any, Any, Any]:
        """Add every region's object sums (global coordinates, one all-reduce); return this region's window."""
        xp, ln = self.state.xp, self.link
        buf = xp.zeros((3,) + tuple(ln.global_shape), dtype=xp.float32)
        win = (slice(None),) + ln.window.slices
        buf[win] = xp.stack([num.real, num.imag, den]).astype(xp.float32)
        ln.comm.allreduce_sum(ln.rank, buf)
        local = buf[win]
        return local[0] + 1j * local[1], local[2], xp.max(buf[2])

    def _probe_sums(self, num_p: Any, den_p: Any) -> tuple[Any, Any]:
        """Add every region's probe sums (one all-reduce)."""
        xp, ln = self.state.xp, self.link
        m = num_p.shape[0]
        pbuf = xp.concatenate([num_p.real, num_p.imag, den_p[None]]).astype(xp.float32)
        ln.comm.allreduce_sum(ln.rank, pbuf)
        return pbuf[:m] + 1j * pbuf[m:2 * m], pbuf[2 * m]
