"""Every ```python block of README.md and docs/*.md runs, so a broken example fails CI.

Markers, an HTML comment on the line just before a block:

- ``<!-- doc-test: OLD => NEW; OLD2 => NEW2 -->``: the test runs the block with these replacements (small sizes,
  few iterations); each OLD must occur in the block, so a stale marker fails too.
- ``<!-- not-run: reason -->``: the block cannot run standalone (a GPU, beamline data); counted below.

Each block runs in a fresh namespace in an empty working directory (files it writes go there). The command
strings of ``ptychopy run "..."`` lines in the README must parse and validate.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
MARKER = re.compile(r"<!--\s*(doc-test|not-run):\s*(.*?)\s*-->\s*$", re.S)
#: blocks marked not-run, by where they are: adding one is a decision this list records
NOT_RUN = {"docs/multigpu.md", "docs/performance.md", "docs/webapp.md"}
NOT_RUN_COUNT = 3


@dataclass
class Snippet:
    where: str  # "docs/io.md:12"
    code: str
    not_run: str = ""
    replacements: list[tuple[str, str]] = field(default_factory=list)


def _snippets() -> list[Snippet]:
    out = []
    for path in DOCUMENTS:
        text = path.read_text()
        for m in BLOCK.finditer(text):
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            where = f"{path.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
            snippet = Snippet(where, m.group(1))
            marker = MARKER.search(before)
            if marker and marker.group(1) == "not-run":
                snippet.not_run = marker.group(2)
            elif marker:
                for pair in marker.group(2).split(";"):
                    old, sep, new = pair.partition("=>")
                    if not sep:
                        raise ValueError(f"{where}: doc-test replacement {pair!r} has no '=>'")
                    snippet.replacements.append((old.strip(), new.strip()))
            out.append(snippet)
    return out


SNIPPETS = _snippets()
RUNNABLE = [s for s in SNIPPETS if not s.not_run]


def test_the_documents_hold_python_examples_and_those_that_do_not_run_say_why():
    assert len(RUNNABLE) >= 5, [s.where for s in SNIPPETS]
    not_run = [s for s in SNIPPETS if s.not_run]
    assert len(not_run) == NOT_RUN_COUNT, [(s.where, s.not_run) for s in not_run]
    assert {s.where.split(":")[0] for s in not_run} == NOT_RUN
    assert all(len(s.not_run) >= 10 for s in not_run), [(s.where, s.not_run) for s in not_run]


@pytest.mark.parametrize("snippet", RUNNABLE, ids=[s.where for s in RUNNABLE])
def test_the_python_example_runs(snippet, tmp_path, monkeypatch):
    code = snippet.code
    for old, new in snippet.replacements:
        assert old in code, f"{snippet.where}: the doc-test marker replaces {old!r}, which the block no longer holds"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, snippet.where, "exec"), {"__name__": "__doc_snippet__"})  # noqa: S102 - our own docs


def test_the_readme_command_lines_hold_valid_command_strings():
    from reconstruction import Parameters

    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if "ptychopy run " in line]
    assert lines
    for line in lines:
        args = shlex.split(line.split("ptychopy run ", 1)[1], comments=True)
        cmdstr = next(a for a in args if not a.startswith("--"))  # after run's own options (--metadata)
        assert "..." not in cmdstr, line
        Parameters.from_cmdstr(cmdstr)


PASTEABLE = re.compile(r"<!--\s*runs-when-pasted\s*-->\s*\n```bash\n(.*?)```", re.S)


def test_the_readme_shell_example_runs_when_pasted(tmp_path):
    """The README's block marked ``runs-when-pasted`` runs line by line as a user pastes it (``.venv/bin`` is this
    test's environment), in an empty folder, and leaves the files it promises."""
    import subprocess
    import sys

    blocks = PASTEABLE.findall((ROOT / "README.md").read_text())
    assert len(blocks) == 1, "the README's command-line example lost its runs-when-pasted marker"
    venv_bin = f"{Path(sys.executable).parent}/"
    lines = [line for line in blocks[0].splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) >= 4
    for line in lines:
        done = subprocess.run(line.replace(".venv/bin/", venv_bin), shell=True, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "data" / "sim64_object_ph.tif").is_file()
    assert (tmp_path / "frc.csv").read_text().startswith("frequency_per_m,frc")
