"""epics_bridge.caclient: the sync CA client of tests and benchmarks retries a missed name search, never a
write that may have reached the IOC, and leaves the process environment as it found it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from bridge_harness import CaLoopback
from caproto import CaprotoTimeoutError
from caproto.sync import client as sync_client

from epics_bridge import caclient


def test_read_of_a_pv_no_ioc_serves_fails_with_its_name_after_every_attempt(tmp_path: Path) -> None:
    env = CaLoopback(tmp_path).client_env  # a free port: nothing answers there
    with pytest.raises(TimeoutError, match=r"read of nobody:here: no answer after 2 attempt"):
        caclient.ca_get("nobody:here", env, timeout_s=0.2, attempts=2)


def test_environment_is_restored_after_a_failed_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPICS_CA_SERVER_PORT", "5064")
    monkeypatch.delenv("EPICS_CA_REPEATER_PORT", raising=False)
    env = CaLoopback(tmp_path).client_env
    with pytest.raises(TimeoutError):
        caclient.ca_get("nobody:here", env, timeout_s=0.1, attempts=1)
    assert os.environ["EPICS_CA_SERVER_PORT"] == "5064"
    assert "EPICS_CA_REPEATER_PORT" not in os.environ


def _flaky(failures: list[str], result: Any) -> tuple[list[int], Any]:
    calls = [0]

    def call(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] <= len(failures):
            raise CaprotoTimeoutError(failures[calls[0] - 1])
        return result

    return calls, call


SEARCH_MISSED = "Timed out while awaiting a response from the search for 'x:y'."
NO_REPLY = "Server at 127.0.0.1:5064 did not respond to attempt to write."


def test_write_is_searched_again_when_the_search_was_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, write = _flaky([SEARCH_MISSED, SEARCH_MISSED], None)
    monkeypatch.setattr(sync_client, "write", write)
    caclient.ca_put("x:y", 1, {}, attempts=3)
    assert calls[0] == 3


def test_write_that_may_have_reached_the_ioc_is_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, write = _flaky([NO_REPLY], None)
    monkeypatch.setattr(sync_client, "write", write)
    with pytest.raises(TimeoutError, match="write of x:y: no answer after 1 attempt"):
        caclient.ca_put("x:y", 1, {}, attempts=3)
    assert calls[0] == 1


def test_read_is_retried_after_any_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    class Resp:
        data = [b"idle"]

    calls, read = _flaky([NO_REPLY, SEARCH_MISSED], Resp())
    monkeypatch.setattr(sync_client, "read", read)
    assert caclient.ca_get("x:y", {}, attempts=3) == "idle"
    assert calls[0] == 3
