"""Fast CuPy implementations of ePIE, DM and LSQML.

Each class subclasses the reference engine (``reconstruction/engines``), computes the same update in fewer
passes over memory, and is checked against it in ``tests/gpu``. Per iteration they:

- run fused RawKernels from ``kernels/*.cu`` (gather-and-multiply, modulus with the error sums, atomic scatter-add
  of the object update) on preallocated buffers, with unnormalised cuFFT plans created once (the orthonormal
  scale folded into the kernels); nothing is allocated inside the loop;
- (ePIE, LSQML, DM) replay CUDA graphs captured once per (active modes, probe update on/off): ePIE's graphs
  hold the per-position steps of an epoch (one graph per ``EPIE_STEPS_PER_GRAPH`` steps, or per ring slot of a
  streamed run), its kernels read the visiting index from a device array, so each new random order (drawn on
  the host from the same generator as the reference, 4 bytes a position) replays the same graphs;
- bring back two float64 error sums per iteration (16 bytes) for the progress report.
"""

from __future__ import annotations

from typing import Any

from .dm import FastDM
from .epie import FastEPIE
from .lsqml import FastLSQML

FAST_ENGINES: dict[str, Any] = {"ePIE": FastEPIE, "DM": FastDM, "LSQML": FastLSQML}
