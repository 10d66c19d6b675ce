"""docs/architecture.md has a row for every module of reconstruction, ptychopy, webapp and epics_bridge.

Each package's section (a heading ``## <package>/ ...``) holds module tables whose first column names a module
(``probes.py``) or a subpackage (``gpu/``, which stands for all its modules, as the document says). A module
without a row fails here, naming it; so does a row naming a module or package that no longer exists.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("reconstruction", "ptychopy", "webapp", "epics_bridge")
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|", re.M)


def _rows_by_package() -> dict[str, set[str]]:
    """The first-column entries of the module tables in each package's sections."""
    rows: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for section in DOC.read_text().split("\n## ")[1:]:
        package = section.split("/", 1)[0]
        if package in rows:
            rows[package] |= set(ROW.findall(section))
    return rows


def _modules(package: str) -> list[str]:
    """Every module of ``package`` as a path relative to it (``gpu/dm.py``), but the package's own __init__."""
    base = ROOT / package
    return sorted(str(p.relative_to(base)) for p in base.rglob("*.py")
                  if "__pycache__" not in p.parts and p != base / "__init__.py")


def _covered(module: str, entries: set[str]) -> bool:
    parts = module.split("/")
    return module in entries or any("/".join(parts[:i]) + "/" in entries for i in range(1, len(parts)))


def test_every_module_has_a_row_in_architecture_md():
    rows = _rows_by_package()
    missing = [f"{package}/{m}" for package in PACKAGES for m in _modules(package) if not _covered(m, rows[package])]
    assert not missing, f"docs/architecture.md has no row for these modules: {', '.join(missing)}"


def test_every_row_of_architecture_md_names_an_existing_module():
    rows = _rows_by_package()
    assert all(rows.values()), {p: len(r) for p, r in rows.items()}
    stale = sorted(f"{package}/{entry}" for package, entries in rows.items() for entry in entries
                   if not (ROOT / package / entry).exists())
    assert not stale, f"docs/architecture.md has rows for modules that do not exist: {', '.join(stale)}"
