"""docs/parameters.md names every command-string flag the parameter tree accepts, and no other.

The flags come from the tree itself (``input_specs()``: every leaf with its aliases, and the input-only
``-energy``), so a new leaf without a line in the document fails here, naming its flag. The reference table
("Every flag") must hold one row per leaf whose default and accepted values are the tree's (``param_table()``).
"""

from __future__ import annotations

import re
from pathlib import Path

from reconstruction.parameters import input_specs, param_table

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "parameters.md"
#: a flag as the document writes it: -name, not inside a word or number (sub-pixel, 2.5e-10, --all)
MENTION = re.compile(r"(?<![\w\-.])-([A-Za-z][A-Za-z0-9_]*)")
#: words the document writes as flags that are not flags, each with where it stands: adding one is a decision
NOT_FLAGS = {
    "name": "the syntax, -name=value",
    "flag": "the syntax, a bare -flag means 1",
    "sise": "the example of an unknown flag",
    "k": "DM's exit waves rolled by -k pixels",
    "R": "-jitterRadius's offsets in [-R, R]",
}
TABLE_HEADING = "## Every flag (reference)"
CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _accepted_flags() -> dict[str, str]:
    """Every flag spelling the tree accepts -> the leaf's path."""
    return {name: s.path for s in input_specs() for name in (s.flag, *s.aliases)}


def _table_rows(text: str) -> dict[str, list[str]]:
    """The reference table's rows by their first flag: [flag cell, meaning, default, accepted]."""
    section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in CELL_SPLIT.split(line)[1:-1]]
        if len(cells) == 4 and cells[0].startswith("`-"):
            rows[cells[0].split("`")[1].lstrip("-")] = cells
    return rows


def test_every_flag_the_tree_accepts_is_named_in_parameters_md():
    mentioned = set(MENTION.findall(DOC.read_text()))
    missing = sorted(f"-{flag} ({path})" for flag, path in _accepted_flags().items() if flag not in mentioned)
    assert not missing, f"docs/parameters.md does not name these flags: {', '.join(missing)}"


def test_parameters_md_names_no_flag_the_tree_does_not_accept():
    text = DOC.read_text()
    mentioned = set(MENTION.findall(text))
    unknown = sorted(f"-{m}" for m in mentioned - set(_accepted_flags()) - set(NOT_FLAGS))
    assert not unknown, f"docs/parameters.md names flags the tree does not accept: {', '.join(unknown)}"
    stale = sorted(f"-{w}" for w in NOT_FLAGS if w not in mentioned)
    assert not stale, f"NOT_FLAGS lists words docs/parameters.md no longer holds: {', '.join(stale)}"


def test_the_reference_table_has_each_leafs_default_and_accepted_values():
    rows = _table_rows(DOC.read_text())
    problems = []
    for row in param_table():
        cells = rows.pop(row["flag"], None)
        if cells is None:
            problems.append(f"-{row['flag']}: no row in the table")
            continue
        default = row["default"]
        shown = "(empty)" if default == "" else default if default.startswith("(") else f"`{default}`"
        if cells[2] != shown:
            problems.append(f"-{row['flag']}: default {cells[2]} in the doc, {shown} in the tree")
        if cells[3] != row["expected"]:
            problems.append(f"-{row['flag']}: accepted values {cells[3]!r} in the doc, {row['expected']!r} in the tree")
    problems += [f"-{flag}: a row for a flag that is no leaf" for flag in rows]
    assert not problems, "docs/parameters.md, 'Every flag':\n" + "\n".join(problems)
