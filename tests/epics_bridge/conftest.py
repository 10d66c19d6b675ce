"""Fixtures for the EPICS bridge tests: a private loopback CA port per test, the simulated IOC, bridges.

See ``bridge_harness.py`` for why every bridge runs in its own subprocess.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bridge_harness import BridgeProc, CaLoopback, SimIoc, bridge_config  # noqa: E402


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[CaLoopback]:
    loop = CaLoopback(tmp_path)
    yield loop
    loop.end_repeaters()


@pytest.fixture
def sim(ca: CaLoopback, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SimIoc]:
    """A running simulated IOC (3 rows x 4 columns of 32 px); restart it with ``sim.start()``."""
    ioc = SimIoc(ca, tmp_path / "data", tmp_path / "simioc.log")
    ioc.first_start()
    yield ioc
    ioc.stop(timeout_s=5)
    if getattr(request.node, "rep_call_failed", False):
        print(ioc.log()[-4000:])


@pytest.fixture
def recorder(tmp_path: Path) -> Path:
    return tmp_path / "submissions.jsonl"


@pytest.fixture
def make_bridge(ca: CaLoopback, tmp_path: Path, recorder: Path,
                request: pytest.FixtureRequest) -> Iterator[Callable[..., BridgeProc]]:
    """``make_bridge(fail_first=0, kind="sscan")`` starts a bridge subprocess and waits until it is connected."""
    started: list[BridgeProc] = []

    def make(fail_first: int = 0, kind: str = "sscan", start: bool = True) -> BridgeProc:
        cfg = bridge_config(tmp_path, recorder, fail_first=fail_first, kind=kind)
        proc = BridgeProc(ca, cfg, tmp_path / "bridge.log")
        if start:
            proc.start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop(timeout_s=5)
    if getattr(request.node, "rep_call_failed", False):
        print(started[-1].log()[-6000:] if started else "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call_failed = rep.failed  # type: ignore[attr-defined]
