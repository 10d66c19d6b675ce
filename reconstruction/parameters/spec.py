"""Field metadata for the parameter tree: flag, unit, hint, range and choices of every leaf.

The parameter dataclasses in :mod:`reconstruction.parameters.model` declare their leaves with :func:`param`;
everything that reads or writes parameters (command strings, web forms, the EPICS bridge, the CLI's
``ptychopy params``) walks :func:`leaf_specs` instead of keeping its own list.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

# Kinds of leaf values. "pair_*" are the original's comma pairs such as -step=50e-9,50e-9.
KINDS = ("str", "int", "float", "bool", "choice", "pair_int", "pair_float")


@dataclass(frozen=True)
class FieldSpec:
    """Everything known about one leaf parameter."""

    path: str  # "group.name", e.g. "experiment.step_m"
    group: str
    name: str
    kind: str
    default: Any
    flag: str  # the command-string flag without dashes, e.g. "step"
    unit: str  # "m", "px", "s", "counts", "iterations", "" for none
    hint: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # other accepted flag spellings
    label: str = ""
    advanced: bool = False
    no_effect: bool = False  # accepted for compatibility, does nothing
    open_prefix: str = ""  # a choice that also takes any value starting with this (e.g. "pva://" + a PV name)

    @property
    def expected(self) -> str:
        """Human description of the accepted values, used in error messages and hints."""
        kind_text = {
            "str": "text",
            "int": "an integer",
            "float": "a number",
            "bool": "0 or 1",
            "choice": "one of " + ", ".join(self.choices) + (f", or {self.open_prefix}..." if self.open_prefix
                                                               else ""),
            "pair_int": "two integers separated by a comma",
            "pair_float": "two numbers separated by a comma",
        }[self.kind]
        rng = ""
        if self.min is not None and self.max is not None:
            rng = f" from {_fmt(self.min)} to {_fmt(self.max)}"
        elif self.min is not None:
            rng = f" of at least {_fmt(self.min)}"
        elif self.max is not None:
            rng = f" of at most {_fmt(self.max)}"
        unit = f" ({self.unit})" if self.unit else ""
        return f"{kind_text}{rng}{unit}"


def _fmt(x: float) -> str:
    return f"{int(x)}" if float(x).is_integer() and abs(x) < 1e9 else f"{x:g}"


def param(
    default: Any,
    *,
    kind: str,
    flag: str,
    unit: str = "",
    hint: str,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    label: str = "",
    advanced: bool = False,
    no_effect: bool = False,
    open_prefix: str = "",
) -> Any:
    """Declare a leaf of a parameter dataclass (returns a ``dataclasses.field``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown parameter kind {kind!r}")
    meta = dict(
        kind=kind, flag=flag, unit=unit, hint=hint, min=min, max=max, choices=choices,
        aliases=aliases, label=label, advanced=advanced, no_effect=no_effect, open_prefix=open_prefix,
    )
    return dataclasses.field(default=default, metadata=meta)


def specs_of(group_cls: type, group: str) -> list[FieldSpec]:
    """The :class:`FieldSpec` of each leaf of one group dataclass."""
    out = []
    for f in dataclasses.fields(group_cls):
        m = f.metadata
        out.append(
            FieldSpec(
                path=f"{group}.{f.name}", group=group, name=f.name, kind=m["kind"], default=f.default,
                flag=m["flag"], unit=m["unit"], hint=m["hint"], min=m["min"], max=m["max"],
                choices=m["choices"], aliases=m["aliases"],
                label=m["label"] or f.name.replace("_", " ").capitalize(),
                advanced=m["advanced"], no_effect=m["no_effect"], open_prefix=m["open_prefix"],
            )
        )
    return out


def closest(name: str, candidates: list[str]) -> str | None:
    """The candidate closest to ``name`` (case-insensitive), or None when nothing is near."""
    lowered = {c.lower(): c for c in candidates}
    hit = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[hit[0]] if hit else None
