"""The bridge against real pvAccess and 0MQ servers on loopback, and ADEiger's conventions over CA:
`simioc --pva-port` (a p4p server on a private port pair) and `simioc --zmq-proxy` publishing through bluesky's
own Publisher to bluesky's own Proxy, with the bridge subscribed to the proxy's out port. Each bridge is a
subprocess, as in test_bridge_ca.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from bridge_harness import BridgeProc, SimIoc, bridge_config, records, wait_for

from benchmarks.latency.procs import free_port_pair, port_open
from epics_bridge.simioc_pva import pva_client_env

pytestmark = pytest.mark.epics

# Scans closer than the debounce are the bridge core's back-to-back case (issue 16 item 1: the next scan resets
# CPT/NumCaptured before the debounce ends), for CA and PVA alike; these tests space the PVA scans beyond it.
SETTLE_S = 0.6


def pva_bridge_config(tmp_path: Path, recorder: Path, kind: str) -> Path:
    """The harness configuration with every PV read over pvAccess."""
    path = bridge_config(tmp_path, recorder, kind=kind)
    path.write_text(path.read_text().replace('"$(P)', '"pva://$(P)'))
    return path


def bluesky_bridge_config(tmp_path: Path, recorder: Path, address: str) -> Path:
    path = tmp_path / "bluesky.toml"
    path.write_text(f"""
[bridge]
beamline = "TEST"
journal = "journal.sqlite3"
state_file = "state.json"
heartbeat_s = 0.5

[trigger]
kind = "bluesky"
zmq_address = "{address}"

[data]
path_pv = "start:data_dir"
name_pv = "start:file_name"
scan_number_pv = "start:scan_id"

[metadata]
energy_kev = "start:energy_keV"
scan_dims = ["start:scan_dims.0", "start:scan_dims.1"]
step_m = {{ pvs = ["start:step_um.0", "start:step_um.1"], scale = 1e-6 }}
detector_distance_m = "start:detector_distance_m"

[metadata.parameters]
"data.frames_per_file" = "start:scan_dims.1"

[parameters]
template = "./ptycho -size=32 -qxy=16,16 -dx_d=75e-6 -fs=1 -sqrtData -fftShiftData -beamSize=1e-6 -i=3"

[file_check]
timeout_s = 60.0
initial_backoff_s = 0.05
max_backoff_s = 0.5

[submit]
kind = "callable"
target = "recording_submitter:RecordingSubmitter"
options = {{ path = "{recorder}" }}
""")
    return path


def burst(sim: SimIoc, count: int, gap_s: float, timeout_s: float) -> list[int]:
    """Play ``count`` scans back to back, ``gap_s`` apart; their scan numbers."""
    first = int(sim.get("saveData_scanNumber"))
    done = int(sim.get("sim:ScansDone"))
    sim.put("sim:Gap", gap_s)
    sim.put("sim:Burst", count)
    wait_for(lambda: int(sim.get("sim:ScansDone")) >= done + count, timeout_s, f"{count} scans")
    return list(range(first, first + count))


@pytest.fixture
def pva_sim(ca, tmp_path: Path, request: pytest.FixtureRequest):
    port = free_port_pair()
    ioc = SimIoc(ca, tmp_path / "data", tmp_path / "simioc.log", rows=2, cols=3, size_px=16,
                 extra_args=["--pva-port", str(port)])
    ioc.first_start()
    ioc.pva_port = port  # type: ignore[attr-defined]
    yield ioc
    ioc.stop(timeout_s=5)
    if getattr(request.node, "rep_call_failed", False):
        print(ioc.log()[-4000:])


@pytest.mark.parametrize("kind", ["sscan", "areadetector", "filename"])
def test_pva_trigger_and_metadata_queue_each_complete_scan_once_and_no_aborted_one(
        pva_sim, ca, tmp_path: Path, recorder: Path, kind: str) -> None:
    cfg = pva_bridge_config(tmp_path, recorder, kind)
    bridge = BridgeProc(ca, cfg, tmp_path / "bridge.log", env=pva_client_env(pva_sim.pva_port))
    try:
        bridge.start()
        assert all(name.startswith("pva://") for name in bridge.state()["pvs"])
        first = pva_sim.play()
        time.sleep(SETTLE_S)
        second = pva_sim.play()
        time.sleep(SETTLE_S)
        pva_sim.put("sim:PointTime", 0.2)
        pva_sim.play(abort_after_s=0.3)
        time.sleep(SETTLE_S)
        pva_sim.put("sim:PointTime", 0.002)
        third = pva_sim.play()
        wait_for(lambda: len(records(recorder)) >= 3, 30, "three submissions")
        wait_for(lambda: bridge.state().get("counts", {}).get("ignored", 0) >= (0 if kind == "filename" else 1),
                 10, "the aborted scan to be classified")
        recs = records(recorder)
        assert [r["scan"]["scan_number"] for r in recs] == [str(n) for n in (first, second, third)]
        assert all(r["files_complete"] for r in recs)
        p = recs[0]["params"]
        assert p["experiment"]["scan_dims"] == [2, 3] and p["data"]["frames_per_file"] == 3  # PVA metadata
        assert p["experiment"]["wavelength_m"] == pytest.approx(12.398419843320026e-10 / 8.8)
        from p4p.client.thread import Context

        with Context("pva", conf=pva_client_env(pva_sim.pva_port), useenv=False) as ctx:
            busy = ctx.get("ptysim:scan2.BUSY")  # stamped by the server: the bridge orders PVA values by it
        assert abs(busy.timestamp - time.time()) < 60
    finally:
        bridge.stop()
        if bridge.proc is not None and bridge.proc.returncode not in (0, None):
            print(bridge.log()[-4000:])


def test_eiger_filewriter_acquisitions_are_queued_with_the_dcu_file_names(sim, make_bridge,
                                                                           recorder: Path) -> None:
    bridge = make_bridge(kind="eiger")
    first = sim.play()
    time.sleep(SETTLE_S)
    sim.put("sim:PointTime", 0.2)
    sim.play(abort_after_s=0.3)  # NumImagesCounter_RBV short of NumImages
    time.sleep(SETTLE_S)
    sim.put("sim:PointTime", 0.002)
    second = sim.play()
    wait_for(lambda: len(records(recorder)) >= 2, 30, "two submissions")
    wait_for(lambda: bridge.state()["counts"]["ignored"] >= 1, 10, "the short acquisition")
    recs = records(recorder)
    assert [r["params"]["data"]["file_pattern"] for r in recs] == [
        str(sim.data_dir / f"scan{n}_data_#06d.h5") for n in (first, second)]  # FilePath + scan$id, $id = SequenceId
    assert bridge.state()["last_scan_ignored"]["outcome"] == "partial" and all(r["files_complete"] for r in recs)


class ProxyProc:
    """bluesky's own 0MQ Proxy on two private loopback ports, as a subprocess that can be restarted."""

    def __init__(self, log_path: Path):
        self.in_port, self.out_port = free_port_pair(), free_port_pair()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def addresses(self) -> tuple[str, str]:
        return f"127.0.0.1:{self.in_port}", f"127.0.0.1:{self.out_port}"

    def start(self) -> None:
        code = (f"from bluesky.callbacks.zmq import Proxy; "
                f"Proxy('tcp://127.0.0.1:{self.in_port}', 'tcp://127.0.0.1:{self.out_port}').start()")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: port_open(self.in_port) and port_open(self.out_port), 30, "the 0MQ proxy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def proxy_proc(tmp_path: Path):
    proc = ProxyProc(tmp_path / "proxy.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def proxy(proxy_proc: ProxyProc) -> tuple[str, str]:
    """(in address, out address) of a running proxy."""
    return proxy_proc.addresses


def test_a_restarted_proxy_is_reported_and_the_next_run_is_queued(proxy_proc: ProxyProc, ca, tmp_path: Path,
                                                                  recorder: Path) -> None:
    in_address, out_address = proxy_proc.addresses
    stream = f"zmq://{out_address}"
    sim = SimIoc(ca, tmp_path / "data", tmp_path / "simioc.log", rows=2, cols=3, size_px=16,
                 extra_args=["--zmq-proxy", in_address])
    bridge = BridgeProc(ca, bluesky_bridge_config(tmp_path, recorder, out_address), tmp_path / "bridge.log")
    try:
        sim.first_start()
        bridge.start()
        first = sim.play()
        wait_for(lambda: len(records(recorder)) == 1, 20, "the first run's submission")
        proxy_proc.stop()
        wait_for(lambda: not bridge.state()["pvs"][stream]["connected"], 10, "the stream reported disconnected")
        proxy_proc.start()
        wait_for(lambda: bridge.state()["pvs"][stream]["connects"] == 2, 20, "the subscription back")
        time.sleep(0.5)  # the simulated RunEngine's Publisher reconnects on 0MQ's own schedule
        second = sim.play()
        wait_for(lambda: len(records(recorder)) == 2, 20, "the run after the restart")
        assert [r["scan"]["scan_number"] for r in records(recorder)] == [str(first), str(second)]
    finally:
        bridge.stop()
        sim.stop()


@pytest.mark.slow
def test_bluesky_runs_back_to_back_are_each_queued_once_and_aborted_or_failed_runs_never(
        proxy, ca, tmp_path: Path, recorder: Path) -> None:
    in_address, out_address = proxy
    sim = SimIoc(ca, tmp_path / "data", tmp_path / "simioc.log", rows=2, cols=3, size_px=16,
                 extra_args=["--zmq-proxy", in_address])
    bridge = BridgeProc(ca, bluesky_bridge_config(tmp_path, recorder, out_address), tmp_path / "bridge.log")
    try:
        sim.first_start()
        bridge.start()  # connected: the subscription reached the proxy
        wait_for(lambda: bridge.state()["pvs"][f"zmq://{out_address}"]["value"] == "subscribed", 10,
                 "the subscription")
        numbers = burst(sim, 100, 0.02, 120)
        wait_for(lambda: len(records(recorder)) >= 100, 120, "100 submissions")
        sim.put("sim:PointTime", 0.1)
        sim.play(abort_after_s=0.2)
        sim.put("sim:Fail", 1)
        sim.play()
        sim.put("sim:PointTime", 0.002)
        last = sim.play()
        wait_for(lambda: len(records(recorder)) >= 101, 30, "the run after the aborted and failed ones")
        wait_for(lambda: bridge.state()["counts"]["ignored"] >= 2, 10, "the abort and the failure")
        recs = records(recorder)
        assert [r["scan"]["scan_number"] for r in recs] == [str(n) for n in [*numbers, last]]
        assert len({r["dedup_key"] for r in recs}) == 101 and all(r["files_complete"] for r in recs)
        assert recs[0]["params"]["experiment"]["scan_dims"] == [2, 3]
        assert bridge.state()["counts"]["ignored"] == 2
        assert bridge.state()["last_scan_ignored"]["outcome"] == "failed"
    finally:
        bridge.stop()
        sim.stop()
        if any(p.proc is not None and p.proc.returncode not in (0, None, -15) for p in (bridge, sim)):
            print(bridge.log()[-4000:], sim.log()[-3000:])

