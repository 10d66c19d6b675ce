"""The original ptychopy command-string syntax: ``./ptycho -flag=value -bareFlag -pair=a,b``.

Rules kept from the original: the first token is the program name and is skipped (we skip it only when it
does not itself look like a parameter, so strings without a program name also work); any number of leading
dashes is stripped; names match case-insensitively; a bare ``-flag`` means 1.
Rules we do not keep (``docs/parameters.md``): the original read values by prefix (so ``-threshold`` could
set ``-T``); we match whole names. The original let the last of a repeated flag win silently; we refuse a
flag given twice. A command string longer than :data:`MAX_CMDSTR_CHARS` is refused before it is read, and
reading is linear in the length (quotes as in a POSIX shell, as ``shlex.split`` reads them).
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import Parameters

#: The longest command string accepted (64 KiB of characters; the original's longest are a few hundred).
MAX_CMDSTR_CHARS = 64 * 1024

# One shell word: runs of plain characters, '...' (literal), "..." (backslash escapes \\ and \"), or a
# backslash escape. Possessive quantifiers: no backtracking, so matching is linear.
_WORD = re.compile(r"""(?:[^\s'"\\]++|'[^']*+'|"(?:[^"\\]++|\\.)*+"|\\.)++""", re.S)
_SPACE = re.compile(r"\s*+")
_PIECE = re.compile(r"""[^'"\\]++|'([^']*+)'|"((?:[^"\\]++|\\.)*+)"|\\(.?)""", re.S)
_DQ_ESCAPE = re.compile(r'\\([\\"])')


def _unquote(word: str) -> str:
    parts: list[str] = []
    for m in _PIECE.finditer(word):
        single, double, escaped = m.group(1), m.group(2), m.group(3)
        if single is not None:
            parts.append(single)
        elif double is not None:
            parts.append(_DQ_ESCAPE.sub(r"\1", double))
        elif escaped is not None:
            parts.append(escaped)
        else:
            parts.append(m.group(0))
    return "".join(parts)


def split_words(text: str) -> list[str] | None:
    """``text`` split into words as ``shlex.split(text)`` does, in linear time; None for an unclosed quote."""
    words: list[str] = []
    pos = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    while pos < len(text):
        m = _WORD.match(text, pos)
        if m is None or m.end() == pos:
            return None  # an unclosed quote
        words.append(_unquote(m.group(0)))
        pos = _SPACE.match(text, m.end()).end()  # type: ignore[union-attr]
    return words


def check_length(cmdstr: str) -> None:
    """ParameterError when ``cmdstr`` is longer than :data:`MAX_CMDSTR_CHARS` characters."""
    from .model import ParameterError, Problem

    if len(cmdstr) > MAX_CMDSTR_CHARS:
        raise ParameterError([Problem("", "cmdstr", f"<{len(cmdstr)} characters>",
                                      f"the command string has {len(cmdstr):,} characters; at most "
                                      f"{MAX_CMDSTR_CHARS:,} (64 KiB) are accepted")])


def tokenize(cmdstr: str) -> list[str]:
    """Split on white space (quotes group a value with spaces); drop the program name.

    An unclosed quote falls back to splitting on white space only. Raises ParameterError for a string
    longer than :data:`MAX_CMDSTR_CHARS`.
    """
    check_length(cmdstr)
    tokens = split_words(cmdstr)
    if tokens is None:
        tokens = cmdstr.split()
    if tokens and not tokens[0].startswith("-") and "=" not in tokens[0]:
        tokens = tokens[1:]
    return tokens


def parse_cmdstr(cmdstr: str) -> list[tuple[str, Any]]:
    """``[(flag, raw_value), ...]`` in order; validation happens in ``Parameters.from_flags``.

    A parameter given twice (under one name or two aliases, e.g. ``-i`` and ``-iter``) is refused, naming it.
    """
    from .model import ParameterError, Problem, spec_for_flag

    pairs: list[tuple[str, Any]] = []
    problems = []
    seen: dict[str, str] = {}
    for tok in tokenize(cmdstr):
        name, sep, value = tok.lstrip("-").partition("=")
        if not name:
            problems.append(Problem("", tok[:100], tok[:100], f"cannot read token {tok[:100]!r}: expected "
                                    "-name=value"))
            continue
        spec = spec_for_flag(name)
        if spec is not None:
            if spec.path in seen:
                first = seen[spec.path]
                problems.append(Problem(spec.path, spec.flag, value if sep else "1",
                                        f"-{spec.flag} is given twice ({first} and {tok[:100]}); give it once"))
                continue
            seen[spec.path] = tok[:100]
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
