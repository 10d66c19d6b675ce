"""The import rules of docs/architecture.md are contracts (pyproject.toml, ``[tool.importlinter]``) that
``lint-imports`` checks in ``./dev lint``. The tree keeps them, and a copy of it with one bad import breaks the
contract that forbids it (and those that
import the module, transitively), so the check can fail."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("reconstruction", "ptychopy", "webapp", "epics_bridge")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_tree_keeps_every_import_contract() -> None:
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "7 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(("module", "bad_import", "contract"), [
    ("reconstruction/loop.py", "import django", "reconstruction imports no web"),
    ("reconstruction/loop.py", "import socket", "reconstruction imports no web"),
    ("ptychopy/api.py", "from django.conf import settings", "ptychopy (CLI, paper API) imports no Django"),
    ("reconstruction/state.py", "import ptychopy.api", "Imports point down"),
    ("webapp/scans/paths.py", "import epics_bridge.state", "Imports point down"),
    # one hop away: the HTTP submitter importing a module that imports Django
    ("epics_bridge/http_submit.py", "from . import django_submit", "The bridge's own path"),
    ("epics_bridge/sender.py", "import webapp.workers.bridges", "The bridge's own path"),
    # the web app's domains: an upward import, a model module importing a domain, a circle inside one package
    ("webapp/accounts/auth.py", "import webapp.jobs.services", "Web app domains import down"),
    ("webapp/live/publish.py", "import webapp.jobs.runner", "Web app domains import down"),
    ("webapp/jobs/models.py", "import webapp.live.status", "The model modules import no other"),
    ("webapp/jobs/queue.py", "from . import tasks", "No import circles in webapp"),
])
def test_a_bad_import_breaks_the_contract_that_forbids_it(tmp_path: Path, module: str, bad_import: str,
                                                          contract: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.cu*"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{bad_import}  # the violation under test\n")
    out = lint_imports(tmp_path)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    broken = [line for line in out.stdout.splitlines() if " BROKEN" in line]  # "BROKEN (n ignored imports)"
    assert any(line.startswith(contract) for line in broken), out.stdout[-3000:]
    assert "7 kept" not in out.stdout
    dotted = module.removesuffix(".py").replace("/", ".")
    package, _, leaf = dotted.rpartition(".")
    # a circle is reported inside its package, relatively: "No cycles are allowed in webapp.jobs ... .tasks -> .queue"
    named = dotted in out.stdout or (f"in {package}." in out.stdout and f".{leaf} " in out.stdout)
    assert named, "the report names the importing module"


def _non_docstring_strings(tree: ast.AST) -> list[ast.Constant]:
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_ptychopy_names_no_package_above_it() -> None:
    """The import contracts see imports, not a module loaded by its name: ``ptychopy`` runs the commands of
    ``webapp`` and ``epics_bridge`` through the entry points those packages register, and its code names neither."""
    above = re.compile(r"^(webapp|epics_bridge)([.:]|$)")
    named = [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
             for path in sorted((ROOT / "ptychopy").rglob("*.py"))
             for node in _non_docstring_strings(ast.parse(path.read_text(), str(path))) if above.search(node.value)]
    assert named == []
    assert {"serve", "bridge", "simioc"} <= {ep.name for ep in entry_points(group="ptychopy.commands")}

