"""The original ptychopy command-string syntax: ``./ptycho -flag=value -bareFlag -pair=a,b``.

Rules kept from the original: the first token is the program name and is skipped (we skip it only when it
does not itself look like a parameter, so strings without a program name also work); any number of leading
dashes is stripped; names match case-insensitively; a bare ``-flag`` means 1; the last occurrence wins.
Rules we do not keep (``docs/parameters.md``): the original read values by prefix (so ``-threshold`` could
set ``-T``); we match whole names.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import Parameters


def tokenize(cmdstr: str) -> list[str]:
    """Split on white space (quotes group a value with spaces); drop the program name."""
    try:
        tokens = shlex.split(cmdstr, comments=False, posix=True)
    except ValueError:
        tokens = cmdstr.split()
    if tokens and not tokens[0].startswith("-") and "=" not in tokens[0]:
        tokens = tokens[1:]
    return tokens


def parse_cmdstr(cmdstr: str) -> list[tuple[str, Any]]:
    """``[(flag, raw_value), ...]`` in order; validation happens in ``Parameters.from_flags``."""
    from .model import ParameterError, Problem

    pairs: list[tuple[str, Any]] = []
    problems = []
    for tok in tokenize(cmdstr):
        name, sep, value = tok.lstrip("-").partition("=")
        if not name:
            problems.append(Problem("", tok, tok, f"cannot read token {tok!r}: expected -name=value"))
            continue
        pairs.append((name, value if sep else "1"))
    if problems:
        raise ParameterError(problems)
    return pairs


def format_cmdstr(params: Parameters, program: str = "./ptycho") -> str:
    """Command string of the non-default leaves of ``params``."""
    from .model import spec_for_path

    parts = [program]
    for path, value in params.changed().items():
        spec = spec_for_path(path)
        if spec.kind == "bool":
            text = "1" if value else "0"
        elif isinstance(value, tuple):
            text = ",".join(_num(v) for v in value)
        elif isinstance(value, float):
            text = _num(value)
        else:
            text = str(value)
        if spec.kind == "str" and (" " in text or text == ""):
            text = shlex.quote(text)
        parts.append(f"-{spec.flag}={text}")
    return " ".join(parts)


def _num(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)
