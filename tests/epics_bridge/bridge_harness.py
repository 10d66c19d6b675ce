"""Real Channel Access on a private loopback port: the simulated IOC and the bridge as subprocesses.

Choice (see docs/epics_bridge.md): pyepics' libca is process-global and reads the CA environment once, so every
bridge runs in its own subprocess (``python -m epics_bridge``) with the CA variables of its test's port; each
test gets a fresh free port. The test process itself talks to the IOC with caproto's pure-Python sync client,
which reads the environment at every call, so no libca context ever exists in the pytest process.
A ``caRepeater`` shim on PATH runs caproto's repeater (libca spawns it); each shim writes its PID to a file so
the repeaters, which outlive their parent by design, are ended by PID afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.latency.procs import free_port_pair, wait_for
from epics_bridge.caclient import ca_get, ca_put

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PREFIX = "ptysim:"


class CaLoopback:
    """The CA environment of one test: port, repeater shim, and the env for IOC, bridge and caproto client."""

    def __init__(self, workdir: Path):
        self.port = free_port_pair()
        self.shim_dir = workdir / "shim"
        self.shim_dir.mkdir(parents=True, exist_ok=True)
        self.repeater_pids = workdir / "repeater.pids"
        shim = self.shim_dir / "caRepeater"
        shim.write_text(
            "#!/bin/sh\n"
            f"echo $$ >> '{self.repeater_pids}'\n"
            f"exec '{sys.executable}' -c 'from caproto.sync.repeater import run; run(host=\"127.0.0.1\")'\n")
        shim.chmod(0o755)

    def new_port(self) -> None:
        """Pick another port pair (only before any process of this test uses the current one)."""
        self.port = free_port_pair()

    @property
    def client_env(self) -> dict[str, str]:
        return dict(EPICS_CA_AUTO_ADDR_LIST="NO", EPICS_CA_ADDR_LIST="127.0.0.1",
                    EPICS_CA_SERVER_PORT=str(self.port), EPICS_CA_REPEATER_PORT=str(self.port + 1))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.client_env)
        env.update(EPICS_CAS_INTF_ADDR_LIST="127.0.0.1", EPICS_CAS_BEACON_PORT=str(self.port + 1),
                   EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO", EPICS_CAS_BEACON_ADDR_LIST="127.0.0.1")
        env["PATH"] = f"{self.shim_dir}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def end_repeaters(self) -> None:
        try:
            pids = {int(x) for x in self.repeater_pids.read_text().split()}
        except OSError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


class Process:
    """A subprocess with its output in a log file (shown when a test fails)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        log.write(f"\n==== start {' '.join(self.argv)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class SimIoc(Process):
    """``python -m epics_bridge.simioc`` on the test's port, driven with caproto's sync client."""

    def __init__(self, ca: CaLoopback, data_dir: Path, log_path: Path, rows: int = 3, cols: int = 4,
                 size_px: int = 32, prefix: str = PREFIX, extra_args: list[str] | None = None):
        self.ca = ca
        self.data_dir = data_dir
        self.shape = (rows, cols, size_px)
        self.prefix = prefix
        self.extra_args = list(extra_args or [])  # e.g. --pva-port P, --zmq-proxy HOST:PORT
        super().__init__("simioc", [], {}, log_path)

    def _argv(self) -> list[str]:
        rows, cols, size_px = self.shape
        return [sys.executable, "-m", "epics_bridge.simioc", "--port", str(self.ca.port), "--data-dir",
                str(self.data_dir), "--prefix", self.prefix, "--rows", str(rows), "--cols", str(cols), "--size",
                str(size_px), "--point-time", "0.002", *self.extra_args]

    def get(self, pv: str, timeout_s: float = 2.0) -> Any:
        return ca_get(self.prefix + pv, self.ca.client_env, timeout_s)

    def put(self, pv: str, value: Any, timeout_s: float = 2.0) -> None:
        ca_put(self.prefix + pv, value, self.ca.client_env, timeout_s)

    def start(self) -> None:
        self.argv, self.env = self._argv(), self.ca.env()  # the port may have changed (see first_start)
        super().start()

        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"simioc exited:\n{self.log()[-3000:]}")
            try:
                return self.get("sim:Status", 0.5) == "idle"
            except Exception:
                return False

        wait_for(ready, 30, "the simulated IOC to answer")

    def first_start(self, attempts: int = 3) -> None:
        """Start on a fresh port, trying another port if something else took this one in the meantime."""
        for k in range(attempts):
            try:
                self.start()
                return
            except AssertionError:
                if self.alive() or k == attempts - 1:
                    raise
                self.ca.new_port()

    def play(self, abort_after_s: float | None = None, wait: bool = True) -> int:
        """Play one scan; returns its scan number."""
        done = int(self.get("sim:ScansDone"))
        self.put("sim:Go", 1)
        if abort_after_s is not None:
            wait_for(lambda: self.get("sim:Status") == "scanning", 10, "the scan to start")
            time.sleep(abort_after_s)
            self.put("sim:Abort", 1)
        if wait:
            wait_for(lambda: int(self.get("sim:ScansDone")) > done, 30, "the simulated scan to finish")
        return int(self.get("saveData_scanNumber")) - 1  # saveData: incremented when the scan started


def bridge_config(tmp: Path, recorder: Path, *, fail_first: int = 0, kind: str = "sscan", django: bool = False,
                  iterations: int = 3, geometry_pvs: bool = True, template: str | None = None) -> Path:
    """A bridge configuration for the simulated beamline, recording submissions in ``recorder`` (or, with
    ``django``, submitting through ``webapp.jobs.services.submit_job``). Without ``geometry_pvs`` no PV gives the
    energy or the detector distance; ``template`` replaces the ``[parameters]`` command string."""
    trigger = {
        "sscan": 'kind = "sscan"\nbusy_pv = "$(P)scan2.BUSY"\nmessage_pv = "$(P)scan2.SMSG"\n'
                 'current_point_pv = "$(P)scan2.CPT"\npoints_pv = "$(P)scan2.NPTS"\n',
        "areadetector": 'kind = "areadetector"\ncapture_pv = "$(P)HDF1:Capture_RBV"\n'
                        'num_captured_pv = "$(P)HDF1:NumCaptured_RBV"\nnum_capture_pv = "$(P)HDF1:NumCapture_RBV"\n'
                        'write_status_pv = "$(P)HDF1:WriteStatus"\nwrite_message_pv = "$(P)HDF1:WriteMessage"\n',
        "filename": 'kind = "filename"\nfile_name_pv = "$(P)sim:LastScanFile"\n',
        "eiger": 'kind = "eiger"\nacquire_pv = "$(P)cam1:Acquire_RBV"\n'
                 'images_counter_pv = "$(P)cam1:NumImagesCounter_RBV"\nnum_images_pv = "$(P)cam1:NumImages_RBV"\n'
                 'num_triggers_pv = "$(P)cam1:NumTriggers_RBV"\nfw_enable_pv = "$(P)cam1:FWEnable_RBV"\n'
                 'fw_name_pattern_pv = "$(P)cam1:FWNamePattern_RBV"\nsequence_id_pv = "$(P)cam1:SequenceId"\n'
                 'file_path_pv = "$(P)cam1:FilePath_RBV"\n',
    }[kind]
    pattern = {"filename": "{file_dir}/{file_stem}_data_#06d.h5", "eiger": "{file}_data_#06d.h5"}.get(
        kind, "{path}/{name}_data_#06d.h5")
    submit = ('kind = "django"\nsettings_module = "webapp.settings"\n' if django else
              f'kind = "callable"\ntarget = "recording_submitter:RecordingSubmitter"\n'
              f'options = {{ path = "{recorder}", fail_first = {fail_first} }}\n')
    geometry = ('energy_kev = "$(P)energy"\n'
                'detector_distance_m = { pv = "$(P)detDistance", scale = 1e-3 }\n') if geometry_pvs else ""
    template = template or (f"./ptycho -size=32 -qxy=16,16 -dx_d=75e-6 -fs=1 -sqrtData -fftShiftData -beamSize=1e-6 "
                            f"-i={iterations}")
    text = f"""
[bridge]
beamline = "TEST"
pv_prefix = "{PREFIX}"
journal = "journal.sqlite3"
state_file = "state.json"
debounce_s = 0.3
max_debounce_s = 2.0
heartbeat_s = 0.5

[trigger]
{trigger}
[data]
path_pv = "$(P)HDF1:FilePath"
name_pv = "$(P)HDF1:FileName"
scan_number_pv = "$(P)saveData_scanNumber"
scan_number_offset = -1
file_pattern = "{pattern}"

[metadata]
{geometry}scan_dims = ["$(P)scan2.NPTS", "$(P)scan1.NPTS"]
step_m = {{ pvs = ["$(P)scan2.P1SI", "$(P)scan1.P1SI"], scale = 1e-6 }}

[metadata.parameters]
"data.frames_per_file" = "$(P)scan1.NPTS"

[parameters]
template = "{template}"

[file_check]
timeout_s = 60.0
initial_backoff_s = 0.05
max_backoff_s = 0.5

[submit]
{submit}initial_backoff_s = 0.1
max_backoff_s = 0.5
"""
    path = tmp / "bridge.toml"
    path.write_text(text)
    return path


class BridgeProc(Process):
    """``python -m epics_bridge --config FILE`` with its state file."""

    def __init__(self, ca: CaLoopback, config: Path, log_path: Path, env: dict[str, str] | None = None,
                 state_path: Path | None = None):
        argv = [sys.executable, "-m", "epics_bridge", "--config", str(config), "--log-level", "DEBUG"]
        full_env = ca.env()
        full_env.update(env or {})
        super().__init__("bridge", argv, full_env, log_path)
        self.config = config
        self.extra_env = dict(env or {})
        self.state_path = state_path or config.parent / "state.json"

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (OSError, ValueError):
            return {}

    def start(self, wait_connected: bool = True) -> None:
        super().start()
        assert self.proc is not None
        pid = self.proc.pid

        def mine() -> dict[str, Any]:
            """The state file once this process wrote it (a previous bridge's file does not count)."""
            if not self.alive():
                raise AssertionError(f"bridge exited:\n{self.log()[-3000:]}")
            st = self.state()
            return st if st.get("pid") == pid else {}

        if not wait_connected:
            wait_for(mine, 30, "the bridge's first state")
            return

        def connected() -> bool:
            st = mine()
            return bool(st.get("pvs") and all(p["connected"] and p["value"] is not None
                                              for p in st["pvs"].values()))

        try:
            wait_for(connected, 60, "the bridge to connect to every PV and receive its first value")
        except TimeoutError as exc:
            pvs = {name: (p.get("connected"), p.get("value")) for name, p in mine().get("pvs", {}).items()}
            raise AssertionError(f"{exc}\nPVs (connected, value): {pvs}\nbridge log:\n{self.log()[-3000:]}") from None


def records(path: Path) -> list[dict[str, Any]]:
    """What the recording submitter received, in order."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
