"""Leftovers of a test session that was killed outright (SIGKILL, a CI timeout): found and removed next time.

Every server or process the harness starts is recorded in a small JSON file under the registry folder, owned by
the pytest process's pid, and unrecorded when it is stopped. The first start in a later session removes what a
dead owner left: it kills recorded process groups (only processes whose command line still carries the recorded
marker), stops recorded PostgreSQL and Redis servers and deletes their temporary folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

REGISTRY = Path(os.environ.get("PTYCHOPY_TEST_REGISTRY", Path(tempfile.gettempdir()) / "ptychopy-test-registry"))
_reaped = False


def record(kind: str, **info: Any) -> Path:
    """Note a resource this process owns; returns the entry to pass to :func:`forget`."""
    reap_orphans()
    REGISTRY.mkdir(parents=True, exist_ok=True)
    entry = REGISTRY / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.json"
    entry.write_text(json.dumps({"owner": os.getpid(), "kind": kind, **info}))
    return entry


def forget(entry: Path | None) -> None:
    if entry is not None:
        with contextlib.suppress(OSError):
            entry.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _group_members(pgid: int) -> list[int]:
    members = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(d.name))
    return members


def _reap(info: dict[str, Any]) -> None:
    kind = info.get("kind")
    if kind == "pgroup":
        marker = str(info.get("marker", ""))
        for pid in _group_members(int(info["pgid"])):
            if marker and marker in _cmdline(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    elif kind == "postgres":
        data = Path(info["root"]) / "data"
        if (data / "postmaster.pid").exists():
            argv = [str(info["pg_ctl"]), "-D", str(data), "-m", "immediate", "-w", "-t", "20", "stop"]
            if os.geteuid() == 0:
                argv = ["runuser", "-u", "postgres", "--", *argv]
            with contextlib.suppress(Exception):
                subprocess.run(argv, capture_output=True, timeout=30, check=False)
        shutil.rmtree(info["root"], ignore_errors=True)
    elif kind == "redis":
        with contextlib.suppress(OSError, ValueError):
            pid = int((Path(info["root"]) / "redis.pid").read_text().strip())
            if "redis-server" in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(info["root"], ignore_errors=True)


def reap_orphans() -> int:
    """Remove what sessions that died left behind (once per process); returns how many entries were reaped."""
    global _reaped
    if _reaped:
        return 0
    _reaped = True
    count = 0
    if not REGISTRY.is_dir():
        return 0
    for entry in sorted(REGISTRY.glob("*.json")):
        try:
            info = json.loads(entry.read_text())
        except (OSError, ValueError):
            forget(entry)
            continue
        owner = int(info.get("owner", 0))
        if owner == os.getpid() or _alive(owner):
            continue
        with contextlib.suppress(Exception):
            _reap(info)
        forget(entry)
        count += 1
    return count
