"""Reconstruction engines: each runs one iteration (epoch) over a shared :class:`EngineState`."""

from __future__ import annotations

from .base import EngineSettings, EngineState, IterationMetrics
from .dm import DM
from .epie import EPIE
from .lsqml import LSQML

ENGINES = {"ePIE": EPIE, "DM": DM, "LSQML": LSQML}

__all__ = ["DM", "ENGINES", "EPIE", "LSQML", "EngineSettings", "EngineState", "IterationMetrics"]
