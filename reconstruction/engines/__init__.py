"""Reconstruction engines: each runs one iteration (epoch) over a shared :class:`EngineState`."""

from __future__ import annotations

from typing import Any

from .base import EngineSettings, EngineState, IterationMetrics
from .dm import DM
from .epie import EPIE
from .lsqml import LSQML

ENGINES = {"ePIE": EPIE, "DM": DM, "LSQML": LSQML}


def create_engine(algorithm: str, state: EngineState, settings: EngineSettings) -> Any:
    """The engine for ``algorithm``: the fast GPU path when the state lives on CuPy and it applies, else the
    reference implementation above (the specification every fast path is checked against)."""
    if getattr(state.xp, "__name__", "") == "cupy":
        from ..gpu import fast_engine

        engine = fast_engine(algorithm, state, settings)
        if engine is not None:
            return engine
    return ENGINES[algorithm](state, settings)

__all__ = ["DM", "ENGINES", "create_engine", "EPIE", "LSQML", "EngineSettings", "EngineState", "IterationMetrics"]
