"""Pictures for PNG exports, drawn with Pillow alone: greyscale tiles of real images, the probe modes, the error
curve, and a titled panel sheet that stands alone (object phase and amplitude, probe, error curve)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE_PX = 256
MARGIN_PX = 8
TITLE_PX = 14
CURVE_SIZE_PX = (360, 240)


def to_uint8(image: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Scale a real ``(H, W)`` image linearly to uint8 (``lo`` -> 0, ``hi`` -> 255; NaN -> 0)."""
    img = np.asarray(image, dtype=np.float64)
    finite = img[np.isfinite(img)]
    lo = float(finite.min()) if lo is None and finite.size else (lo or 0.0)
    hi = float(finite.max()) if hi is None and finite.size else (hi if hi is not None else 1.0)
    span = hi - lo if hi > lo else 1.0
    out = np.clip((np.nan_to_num(img, nan=lo) - lo) / span * 255.0, 0, 255)
    return np.rint(out).astype(np.uint8)


def grey(image: np.ndarray) -> Image.Image:
    """A real ``(H, W)`` image as an 8-bit greyscale picture, min..max -> 0..255, at its own size."""
    return Image.fromarray(to_uint8(image), mode="L")


def _fit(picture: Image.Image, size_px: int) -> Image.Image:
    """``picture`` scaled (nearest neighbour, so pixels stay visible) to fit a ``size_px`` square."""
    scale = size_px / max(picture.size)
    return picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                          Image.Resampling.NEAREST)


def probe_modes(probe: np.ndarray, tile_px: int = 128) -> Image.Image:
    """Probe modes ``(modes, n, n)`` side by side: amplitude on the top row, phase below, each tile scaled on
    its own and ``tile_px`` wide."""
    modes = np.asarray(probe).reshape((-1,) + np.shape(probe)[-2:])
    sheet = Image.new("L", (len(modes) * (tile_px + MARGIN_PX) + MARGIN_PX, 2 * (tile_px + MARGIN_PX) + MARGIN_PX),
                      255)
    for i, mode in enumerate(modes):
        for row, part in enumerate((np.abs(mode), np.angle(mode))):
            sheet.paste(_fit(grey(part), tile_px),
                        (MARGIN_PX + i * (tile_px + MARGIN_PX), MARGIN_PX + row * (tile_px + MARGIN_PX)))
    return sheet


def error_curve(errors: Sequence[float], label: str = "error", size_px: tuple[int, int] = CURVE_SIZE_PX
                ) -> Image.Image:
    """The error per iteration as a line on a log scale (linear when a value is <= 0), with the first and last
    values and the iteration count written on it."""
    w, h = size_px
    picture = Image.new("L", size_px, 255)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    values = np.asarray(list(errors), dtype=np.float64)
    values = values[np.isfinite(values)]
    left, top, right, bottom = 40, 22, w - 10, h - 24
    draw.rectangle((left, top, right, bottom), outline=0)
    if values.size == 0:
        draw.text((left + 6, top + 6), "no iterations", fill=0, font=font)
        return picture
    log = bool(np.all(values > 0))
    y = np.log10(values) if log else values
    lo, hi = float(y.min()), float(y.max())
    span = hi - lo if hi > lo else 1.0
    xs = left + (np.arange(values.size) / max(values.size - 1, 1)) * (right - left)
    ys = bottom - (y - lo) / span * (bottom - top)
    if values.size == 1:
        draw.ellipse((xs[0] - 2, ys[0] - 2, xs[0] + 2, ys[0] + 2), fill=0)
    else:
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=0, width=2)
    scale = "log scale" if log else "linear scale"
    draw.text((left, 4), f"{label} ({scale}): {values[0]:.3g} -> {values[-1]:.3g}", fill=0, font=font)
    draw.text((left, bottom + 6), f"iteration 1 .. {values.size}", fill=0, font=font)
    return picture


def panel_sheet(panels: Sequence[tuple[str, Image.Image]], columns: int = 2, tile_px: int = TILE_PX
                ) -> Image.Image:
    """Titled pictures on a white sheet, ``columns`` per row, each fitted into a ``tile_px`` square."""
    font = ImageFont.load_default()
    cell_w, cell_h = tile_px + 2 * MARGIN_PX, tile_px + TITLE_PX + 2 * MARGIN_PX
    rows = -(-len(panels) // columns)
    sheet = Image.new("L", (columns * cell_w, rows * cell_h), 255)
    draw = ImageDraw.Draw(sheet)
    for k, (title, picture) in enumerate(panels):
        x0, y0 = (k % columns) * cell_w + MARGIN_PX, (k // columns) * cell_h + MARGIN_PX
        draw.text((x0, y0), title, fill=0, font=font)
        sheet.paste(_fit(picture, tile_px), (x0, y0 + TITLE_PX))
    return sheet
