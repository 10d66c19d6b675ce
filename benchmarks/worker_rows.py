"""What the benchmarks that run each code in its own process share: start one worker process, keep its log, and
read back the rows it printed as ``PREFIX {json}`` lines; and the ``--worker`` switch between the two roles."""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_rows(cmd: list[str], prefix: str, timeout_s: float, log: Any, label: str) -> tuple[list[dict], int, str]:
    """Run ``cmd``; (its ``prefix`` rows, its exit code (-1 when it ran past ``timeout_s``), its stderr's tail).
    Its whole stdout and the tail of its stderr go to ``log`` under ``## label``."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else str(exc.stdout or "")
        stderr, code = f"timed out after {timeout_s:g} s", -1
    log.write(f"## {label}\n{stdout}\n{stderr[-4000:]}\n")
    log.flush()
    head = prefix + " "
    rows = [json.loads(line[len(head):]) for line in stdout.splitlines() if line.startswith(head)]
    return rows, code, stderr[-600:]


def worker_or_orchestrator(parser: argparse.ArgumentParser, worker: Callable[[argparse.Namespace], None],
                           orchestrate: Callable[[argparse.Namespace], None]) -> None:
    """Parse the command line (``parser`` gets a hidden ``--worker``) and play the worker or the orchestrator."""
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    (worker if args.worker else orchestrate)(args)


def keep_rows(rows: list[dict], got: list[dict], path: Path) -> None:
    """Add ``got`` to ``rows`` and rewrite the JSON file of all rows so far (a later failure loses nothing)."""
    rows.extend(got)
    path.write_text(json.dumps(rows, indent=1))


def show(text: str, log: Any) -> None:
    """Print ``text`` (a table) and append it to ``log``."""
    print(text, flush=True)
    log.write(text + "\n")
