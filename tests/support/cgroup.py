"""A worker process under a memory limit of its own: a child memory cgroup (v2, or v1's memory controller) of
the test process's cgroup, as a container's or a systemd unit's ``MemoryMax`` would set it. Needs root and a
writable cgroup file system; :class:`CgroupUnavailable` says why not."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from .processes import ManagedProcess, python_argv


class CgroupUnavailable(RuntimeError):
    """No memory cgroup can be made here."""


def _own_memory_cgroup() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return Path("/sys/fs/cgroup") / path.lstrip("/")
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    raise CgroupUnavailable("no memory cgroup in /proc/self/cgroup")


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[Path]:
    """A fresh child memory cgroup limited to ``limit_bytes``; removed afterwards (its processes must be gone)."""
    if os.geteuid() != 0:
        raise CgroupUnavailable("making a cgroup needs root")
    parent = _own_memory_cgroup()
    group = parent / f"ptychopy-test-{secrets.token_hex(4)}"
    try:
        group.mkdir()
        limit_file = "memory.max" if (group / "memory.max").exists() else "memory.limit_in_bytes"
        (group / limit_file).write_text(str(limit_bytes))
    except OSError as exc:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise CgroupUnavailable(f"cannot make a memory cgroup under {parent}: {exc}") from exc
    try:
        yield group
    finally:
        for _ in range(50):  # the killed processes leave the group a moment later
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def worker_in_cgroup(name: str, env: Mapping[str, str], group: Path) -> ManagedProcess:
    """``python -m webapp.worker`` started inside ``group`` (the shell joins it, then execs the worker)."""
    argv = ["sh", "-c", f'echo $$ > "{group}/cgroup.procs" && exec "$0" "$@"', *python_argv("-m", "webapp.worker")]
    return ManagedProcess(name, argv, env, marker="-m webapp.worker")
