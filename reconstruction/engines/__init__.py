"""Reconstruction engines: each runs one iteration (epoch) over a shared :class:`EngineState`."""

from __future__ import annotations

from typing import Any

from .base import EngineSettings, EngineState, IterationMetrics
from .dm import DM
from .epie import EPIE
from .lsqml import LSQML

ENGINES: dict[str, Any] = {"ePIE": EPIE, "DM": DM, "LSQML": LSQML}


def create_engine(algorithm: str, state: EngineState, settings: EngineSettings, implementation: str = "reference"
                  ) -> Any:
    """The engine for ``algorithm``: the reference implementation above (the specification every fast path is
    checked against), or with ``implementation="fast"`` the fused CuPy engine (``reconstruction/gpu``).
    Which one a run uses is the run plan's decision (:func:`reconstruction.run_plan.plan_run`)."""
    if implementation == "fast":
        from ..gpu.engines import FAST_ENGINES

        return FAST_ENGINES[algorithm](state, settings)
    if implementation != "reference":
        raise ValueError(f"implementation={implementation!r}: expected 'fast' or 'reference'")
    return ENGINES[algorithm](state, settings)


def error_measure(algorithm: str) -> str:
    """What the error reported by ``algorithm`` ("ePIE", "DM", "LSQML" or an alias) measures, in one phrase for plots,
    pages and result files. Every error is sqrt(sum (|F psi| - A)^2 / sum A^2) over measured pixels; the
    algorithms differ in which exit waves psi and which positions enter it."""
    from ..parameters.model import ALGORITHM_ALIASES

    return str(ENGINES[ALGORITHM_ALIASES.get(algorithm.lower(), algorithm)].error_measure)


__all__ = ["DM", "ENGINES", "create_engine", "error_measure", "EPIE", "LSQML", "EngineSettings", "EngineState",
           "IterationMetrics"]
