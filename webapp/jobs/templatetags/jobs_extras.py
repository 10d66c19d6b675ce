"""Small display filters for the job pages."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    """``3725.2`` -> ``1 h 02 min``; ``42.3`` -> ``42 s``; None -> ``—``."""
    if seconds is None:
        return "—"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


@register.filter
def sig4(value: float | None) -> str:
    """A number with 4 significant digits, or ``—``."""
    if value is None:
        return "—"
    return f"{float(value):.4g}"


@register.filter
def length_nm(metres: float | None) -> str:
    """``2.35e-08`` -> ``23.5 nm``; ``3.2e-06`` -> ``3.2 µm``; None -> ``—``."""
    if metres is None:
        return "—"
    value = float(metres)
    return f"{value * 1e9:.3g} nm" if value < 1e-6 else f"{value * 1e6:.3g} µm"
