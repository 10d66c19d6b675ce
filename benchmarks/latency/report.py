"""``python -m benchmarks.latency.report A.json.gz B.json.gz ...``: one markdown table over several result files.

Columns are (mode, viewer count) of every file given; rows are the hops; cells are p50 / p95 / max in ms.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

from .cli import ROWS, _ms, verdicts

EXTRA = [
    ("frame_latency", "**frame produced -> received, during the run**"),
    ("frame_latency_steady", "frame produced -> received, once every viewer is connected"),
    ("ws_handshake", "(benchmark) websocket handshake per viewer"),
    ("frame_interval", "interval between running frames (5 Hz = 200)"),
]


def table(results: list[dict[str, Any]]) -> str:
    cols: list[tuple[str, str, dict[str, Any]]] = []
    for r in results:
        for key, summary in r["summary"].items():
            if key.startswith("viewers_"):
                cols.append((r["mode"], key.split("_")[1], summary))
    lines = ["| hop, ms: p50 / p95 / max | " + " | ".join(f"{m}, {v} viewer{'s' if v != '1' else ''}"
                                                       for m, v, _ in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, label in [*ROWS, *EXTRA]:
        cells = []
        for _, _, s in cols:
            st = s.get(name)
            cells.append("–" if not st or not st["n"] else f"{_ms(st['p50'])} / {_ms(st['p95'])} / {_ms(st['max'])}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| scans (jobs not done) | " + " | ".join(f"{s['scans']} ({s['failed_jobs']})" for *_, s in cols)
                 + " |")
    return "\n".join(lines)


def targets(results: list[dict[str, Any]]) -> str:
    lines = ["| mode | target | limit | p95 | met |", "|---|---|---|---|---|"]
    for r in results:
        for what, limit, got, ok in verdicts(r["mode"], r["summary"]):
            lines.append(f"| {r['mode']} | {what} | {limit * 1000:,.0f} ms | {_ms(got)} ms | "
                         f"{'–' if ok is None else ('yes' if ok else '**no**')} |")
    return "\n".join(lines)


def read_result(path: Path) -> dict[str, Any]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as fh:
            return dict(json.loads(fh.read()))
    return dict(json.loads(path.read_text()))


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    results = [read_result(p) for p in paths]
    for r in results:
        load = "/".join(f"{x:.1f}" for x in r.get("load_avg_after", ()))
        print(f"- {r['mode']}: {r['date']}, {r['machine']}, load {load}, commit {r.get('commit', '')}, "
              f"`{r['command']}`")
    print()
    print(table(results))
    print()
    print(targets(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
