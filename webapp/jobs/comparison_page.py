"""What the comparison page draws (compare.js) from two aligned objects: small uint8 images and the FRC curve.
No Django here, so benchmarks/live_draw.py (--compare) makes the page's data as the view does."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from reconstruction.compare import Comparison

MAX_PX = 256  # each image on the page is at most this many pixels on a side (strided)


@dataclass(frozen=True)
class ComparisonView:
    found: Comparison

    def summary(self) -> dict[str, Any]:
        frc = self.found.frc
        return {"shift_px": [round(v, 3) for v in self.found.alignment.shift_px],
                "phase_rad": round(self.found.alignment.phase_rad, 4),
                "resolution_m": frc.resolution_m, "pixel_m": frc.pixel_m, "threshold": frc.threshold,
                "criterion": frc.criterion,
                "relative_difference": round(self.found.relative_difference, 4)}

    def page_data(self) -> dict[str, Any]:
        """What compare.js draws: three uint8 images (base64, with their value range and pixel size) and the FRC."""
        ref = self.found.difference + self.found.alignment.aligned
        aligned = self.found.alignment.aligned
        images = [_image("phase_a", np.angle(ref), self.found.frc.pixel_m),
                  _image("phase_b", np.angle(aligned), self.found.frc.pixel_m),
                  _image("phase_difference", np.angle(ref * np.conj(aligned)), self.found.frc.pixel_m)]
        frc = self.found.frc
        return {"images": images, "summary": self.summary(),
                "frc": {"frequency_per_m": [float(f"{q:.6g}") for q in frc.frequency_per_m],
                        "frc": [round(float(v), 4) for v in frc.frc],
                        "threshold": [round(float(v), 4) for v in (frc.threshold_curve if frc.threshold_curve
                                                                   is not None else [frc.threshold] * len(frc.frc))]}}


def _image(name: str, values: np.ndarray, pixel_m: float) -> dict[str, Any]:
    stride = max(1, int(np.ceil(max(values.shape) / MAX_PX)))
    small = values[::stride, ::stride]
    lo, hi = float(small.min()), float(small.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    q = np.clip((small - lo) * scale + 0.5, 0, 255).astype(np.uint8)
    return {"name": name, "shape": [int(q.shape[0]), int(q.shape[1])], "vmin": lo, "vmax": hi,
            "pixel_m": pixel_m * stride, "bdata": base64.b64encode(q.tobytes()).decode()}
