"""Measurement hook: a producer timestamp ``t_produced`` (``time.time()``) in every frame header.

The frame header has ``seq`` and ``iteration`` but no producer time (see README, "Proposed changes": the lead
adds ``"t_produced": time.time()`` to the header in ``webapp/jobs/runner.py``). Until then the benchmark's
entry points wrap :func:`webapp.live.frames.encode_frame`, which :meth:`webapp.jobs.runner.JobRun.frame` calls
once per frame right after the preview is computed and before the row update and the publish: the same place
the proposed change stamps. Nothing else of the app is changed; an already stamped header is left alone.
"""

from __future__ import annotations

import time
from typing import Any

_installed = False


def install() -> None:
    """Wrap ``webapp.live.frames.encode_frame`` (idempotent). Needs no Django set-up."""
    global _installed
    if _installed:
        return
    from webapp.live import frames

    original = frames.encode_frame

    def encode_frame(header: dict[str, Any], images: list[Any]) -> bytes:
        if "t_produced" not in header:
            header = {**header, "t_produced": time.time()}
        return original(header, images)

    frames.encode_frame = encode_frame  # type: ignore[assignment]
    _installed = True
