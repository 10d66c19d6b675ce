"""The one rule for user-supplied names that become file names, and the one way to join them to a folder.

A *file name* here is one path component chosen by a user (``-jobID``, an export stem): letters and digits
(any script), ``.``, ``_`` and ``-``, not starting with ``.``, at most :data:`MAX_NAME_CHARS` characters. So it
can hold no separator, no ``..`` and no NUL. :func:`path_inside` joins such a name (plus a fixed suffix) to a
folder and checks, with every symlink resolved, that the result stays inside that folder and is not itself a
symlink, before anything is written there.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_NAME_CHARS = 100
NAME_RULE = (f"letters, digits, '.', '_' and '-' only, not starting with '.', at most {MAX_NAME_CHARS} "
             "characters")


class UnsafePathError(ValueError):
    """A name that is not a plain file name, or a path that would leave its folder."""


def file_name_problem(name: str) -> str | None:
    """None when ``name`` is a safe single file-name component, else what is wrong with it."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"it has {len(name)} characters"
    bad = sorted({c for c in name if not (c.isalnum() or c in "._-")})
    if bad:
        return "it contains " + ", ".join(repr(c) for c in bad[:5])
    if name.startswith("."):
        return "it starts with '.'"
    return None


def check_file_name(name: str, what: str) -> str:
    """``name`` unchanged when it is a safe file name; :class:`UnsafePathError` naming ``what`` otherwise."""
    problem = file_name_problem(name)
    if problem is not None:
        raise UnsafePathError(f"{what}={name[:120]!r} cannot be used in a file name ({problem}): {NAME_RULE}")
    return name


def sanitised_name(text: str) -> str:
    """``text`` made into a safe file name: other characters become '_', leading dots go, at most
    :data:`MAX_NAME_CHARS` characters; "file" when nothing is left. For names the user did not type as a
    name (a result file's stem), where refusing would help no one."""
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in text).lstrip(".")[:MAX_NAME_CHARS]
    return name or "file"


def is_inside(path: Path | str, root: Path | str) -> bool:
    """Whether ``path``, with every symlink resolved, is ``root`` or lies below it (``root`` resolved too)."""
    real = Path(os.path.realpath(path))
    real_root = Path(os.path.realpath(root))
    return real == real_root or real.is_relative_to(real_root)


def path_inside(root: Path | str, name: str, suffix: str = "", *, what: str = "file name") -> Path:
    """``root / (name + suffix)`` after checking that ``name`` is a safe file name, that the joined path
    stays inside ``root`` once symlinks are resolved, and that it is not a symlink; else
    :class:`UnsafePathError` naming ``what``. ``root`` itself may be anywhere (it is the caller's choice)."""
    check_file_name(name, what)
    root = Path(root)
    path = root / f"{name}{suffix}"
    if path.parent != root:
        raise UnsafePathError(f"{what}={name!r}: the suffix {suffix!r} names another folder")
    if path.is_symlink():
        raise UnsafePathError(f"{path} is a symbolic link; refusing to write through it")
    if not is_inside(path, root):
        raise UnsafePathError(f"{path} resolves outside {root}")
    return path
