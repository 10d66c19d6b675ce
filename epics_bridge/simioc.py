"""``ptychopy simioc``: a caproto IOC on loopback that plays ptychography scans, for demos and tests.

PVs (prefix ``P``, default ``ptysim:``) mimic a beamline's conventions:

- sscan: an outer record ``scan2`` (rows) with ``BUSY``, ``SMSG``, ``NPTS``, ``CPT``, ``P1SI`` (step, um) over an
  inner ``scan1`` (columns);
- synApps saveData: at the *start* of a scan ``saveData_fileName`` becomes ``{baseName}{NNNN}.mda`` from
  ``saveData_scanNumber``, which is then incremented (it holds the next scan's number during and after a scan);
  ``saveData_fullPathName`` is the directory;
- areaDetector NDFileHDF5 ``HDF1:`` (``FilePath``, ``FileName``, ``FileNumber_RBV`` (auto-increments when a
  file is opened), ``FullFileName_RBV`` (set on open), ``Capture_RBV``, ``NumCapture_RBV`` (0 = unlimited with
  ``sim:Unlimited``), ``NumCaptured_RBV``, ``WriteStatus``, ``WriteMessage``);
- ADEiger with its FileWriter ``cam1:`` (``Acquire_RBV``, ``NumImages_RBV``, ``NumTriggers_RBV``,
  ``NumImagesCounter_RBV``, ``FWEnable_RBV``, ``FWNamePattern_RBV`` = ``scan$id``, ``FWNImagesPerFile_RBV``,
  ``SequenceId`` (set when armed), ``FilePath_RBV``);
- ``energy`` (keV), ``detDistance`` (mm), and ``sim:LastScanFile`` (the master file, written once the scan's
  files are closed: what a DAQ script's soft record would hold, for the file-name trigger).

Control: put 1 to ``sim:Go`` to play a scan, N to ``sim:Burst`` to play N scans back to back ``sim:Gap`` s apart
(every ``sim:AbortEvery``-th one aborted halfway), 1 to ``sim:Abort`` to abort the running scan, 1 to ``sim:Fail``
to make the file writer fail in the next scan; ``sim:PointTime`` (s per point) and ``sim:LateWrite`` (s the last
file is still being written after ``scan2.BUSY`` drops). Each row is written as ``name_data_NNNNNN.h5.tmp`` and
renamed on close. The next scan number is kept in ``<data-dir>/.simioc_autosave.json`` across restarts, like
autosave would.
``--pva-port`` serves every PV over pvAccess too (:mod:`epics_bridge.simioc_pva`); ``--zmq-proxy`` publishes
every scan as a bluesky run (:mod:`epics_bridge.simioc_bluesky`). ``--live-file`` writes each scan frame by frame
into an SWMR file, ``--live-pva PORT`` streams it frame by frame over pvAccess (:class:`~epics_bridge.simioc_stream.
ScanStream`: the NTNDArray, positions, plan and status PVs of ``--stream pva``; the first frame waits up to
``sim:LiveWait`` s for a client of the image PV): what a streaming job reads.
``--stream pva|swmr`` instead plays one scan frame by frame at ``--rate`` as a detector stream: an areaDetector
NTNDArray with positions and scan status over pvAccess, or an HDF5 file with SWMR
(:mod:`epics_bridge.simioc_stream`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .simdata import DATASET, SimGeometry, data_file, simulate_patterns, write_master, write_nxmx_metadata

log = logging.getLogger(__name__)

AUTOSAVE = ".simioc_autosave.json"


def _char(name: str, doc: str) -> Any:
    from caproto import ChannelType
    from caproto.server import pvproperty

    return pvproperty(name=name, value="", dtype=ChannelType.CHAR, max_length=512, string_encoding="latin-1",
                      doc=doc)


def make_group_class() -> type:
    """The PVGroup class (built lazily so importing this module does not need caproto)."""
    from caproto import ChannelType
    from caproto.server import PVGroup, pvproperty

    class SimBeamline(PVGroup):  # type: ignore[misc]
        busy2 = pvproperty(name="scan2.BUSY", value=0, doc="outer scan busy (1 while scanning)")
        smsg2 = pvproperty(name="scan2.SMSG", value="", dtype=ChannelType.STRING, doc="outer scan message")
        npts2 = pvproperty(name="scan2.NPTS", value=10, doc="rows")
        cpt2 = pvproperty(name="scan2.CPT", value=0, doc="rows done")
        step2 = pvproperty(name="scan2.P1SI", value=0.2, doc="row step (um)")
        busy1 = pvproperty(name="scan1.BUSY", value=0, doc="inner scan busy (toggles every row)")
        npts1 = pvproperty(name="scan1.NPTS", value=10, doc="columns")
        cpt1 = pvproperty(name="scan1.CPT", value=0, doc="columns done in this row")
        step1 = pvproperty(name="scan1.P1SI", value=0.2, doc="column step (um)")
        # synApps saveData: at the START of a scan the file name is made from the base name and the scan number,
        # then the scan number is incremented; fullPathName is the directory
        scan_number = pvproperty(name="saveData_scanNumber", value=1, doc="number of the NEXT scan")
        base_name = _char("saveData_baseName", "saveData file base name")
        save_file_name = _char("saveData_fileName", "the current/last scan's file (written at scan start)")
        full_path_name = _char("saveData_fullPathName", "saveData's directory")
        last_scan_file = _char("sim:LastScanFile", "master file of the last completed scan (written after "
                                                   "its files are closed)")
        # areaDetector NDFileHDF5
        file_path = _char("HDF1:FilePath", "data directory")
        file_name = _char("HDF1:FileName", "base name of the scan's files")
        file_number = pvproperty(name="HDF1:FileNumber_RBV", value=1, doc="next file number (auto-increments "
                                                                           "when a file is opened)")
        full_file_name = _char("HDF1:FullFileName_RBV", "file being written (set on open)")
        capture = pvproperty(name="HDF1:Capture_RBV", value="Done", dtype=ChannelType.ENUM,
                             enum_strings=("Done", "Capture"), doc="file plugin capturing")
        num_capture = pvproperty(name="HDF1:NumCapture_RBV", value=0, doc="frames to capture (0 = unlimited)")
        num_captured = pvproperty(name="HDF1:NumCaptured_RBV", value=0, doc="frames captured")
        write_status = pvproperty(name="HDF1:WriteStatus", value="Write OK", dtype=ChannelType.ENUM,
                                  enum_strings=("Write OK", "Write error"), doc="file writer error flag")
        write_message = _char("HDF1:WriteMessage", "file writer message")
        # ADEiger detector driver with its FileWriter
        eiger_acquire = pvproperty(name="cam1:Acquire_RBV", value="Done", dtype=ChannelType.ENUM,
                                   enum_strings=("Done", "Acquire"), doc="acquiring")
        eiger_num_images = pvproperty(name="cam1:NumImages_RBV", value=0, doc="images per trigger")
        eiger_num_triggers = pvproperty(name="cam1:NumTriggers_RBV", value=1, doc="triggers")
        eiger_counter = pvproperty(name="cam1:NumImagesCounter_RBV", value=0, doc="images acquired")
        eiger_fw_enable = pvproperty(name="cam1:FWEnable_RBV", value="Enable", dtype=ChannelType.ENUM,
                                     enum_strings=("Disable", "Enable"), doc="FileWriter enabled")
        eiger_fw_pattern = _char("cam1:FWNamePattern_RBV", "FileWriter name pattern ($id = sequence id)")
        eiger_fw_per_file = pvproperty(name="cam1:FWNImagesPerFile_RBV", value=10, doc="images per data file")
        eiger_sequence_id = pvproperty(name="cam1:SequenceId", value=0, doc="series id (set when armed)")
        eiger_file_path = _char("cam1:FilePath_RBV", "directory the DCU files are seen in")
        energy = pvproperty(name="energy", value=8.8, doc="photon energy (keV)")
        det_distance = pvproperty(name="detDistance", value=1900.0, doc="sample-detector distance (mm)")
        go = pvproperty(name="sim:Go", value=0, doc="put 1 to play one scan")
        burst = pvproperty(name="sim:Burst", value=0, doc="put N to play N scans back to back")
        gap = pvproperty(name="sim:Gap", value=0.02, doc="seconds between the scans of a burst")
        abort = pvproperty(name="sim:Abort", value=0, doc="put 1 to abort the running scan")
        fail = pvproperty(name="sim:Fail", value=0, doc="put 1: the file writer fails in the next scan")
        unlimited = pvproperty(name="sim:Unlimited", value=0, doc="1: the HDF5 plugin captures with "
                                                                  "NumCapture=0 (Stream mode until stopped)")
        point_time = pvproperty(name="sim:PointTime", value=0.005, doc="seconds per point")
        late_write = pvproperty(name="sim:LateWrite", value=0.0, doc="seconds the last file lags BUSY 1->0")
        live_shuffle = pvproperty(name="sim:LiveShuffle", value=0,
                                  doc="--live-file: frames written in shuffled blocks of this many (0/1: in order)")
        live_dark = pvproperty(name="sim:LiveDark", value=-1,
                               doc="--live-file: scan point J >= 0 written dark (no photons) into the live file of "
                                   "the next scans (its streaming job fails there); -1: none")
        live_wait = pvproperty(name="sim:LiveWait", value=10.0,
                               doc="--live-pva: seconds the first frame waits for a client monitoring the image "
                                   "PV (a streaming job listening; pvAccess keeps no history); 0: no wait")
        burst = pvproperty(name="sim:Burst", value=0, doc="put N: play N scans back to back, sim:Gap apart")
        gap = pvproperty(name="sim:Gap", value=0.02, doc="seconds between the scans of a burst")
        abort_every = pvproperty(name="sim:AbortEvery", value=0,
                                 doc="in a burst, abort every k-th scan halfway (0 = none)")
        status = pvproperty(name="sim:Status", value="idle", dtype=ChannelType.STRING, doc="idle/scanning")
        scans_done = pvproperty(name="sim:ScansDone", value=0, doc="scans played since start")

        def __init__(self, *args: Any, data_dir: Path, size_px: int, first_scan: int, nxmx: bool = False,
                     **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.data_dir = data_dir
            self.nxmx = nxmx  # the data files record the geometry (NXmx), as an Eiger's do
            self.size_px = size_px
            self.first_scan = first_scan
            self._task: asyncio.Task[None] | None = None
            self._abort = False
            self.pva: Any = None  # a PvaMirror when serving over pvAccess too
            self.runs: Any = None  # a RunPublisher when publishing bluesky documents
            self.abort_after_points: int | None = None  # abort once this many points are done (bursts)
            self.live_file = False  # also write each scan frame by frame into an SWMR file (--live-file)
            self.live_pva: Any = None  # a simioc_stream.ScanStream: each scan also over pvAccess (--live-pva)

        async def set(self, prop: Any, value: Any) -> None:
            """Write a PV (and post it over pvAccess when serving it there)."""
            await prop.write(value)
            if self.pva is not None:
                self.pva.post(prop.pvname)

        @scan_number.startup  # type: ignore[no-redef]
        async def scan_number(self, instance: Any, async_lib: Any) -> None:
            await self.scan_number.write(_next_scan_number(_load_autosave(self.data_dir), self.first_scan))
            await self.file_path.write(str(self.data_dir))
            await self.eiger_file_path.write(str(self.data_dir))
            await self.full_path_name.write(str(self.data_dir) + "/")
            await self.base_name.write("ptysim_")
            await self.eiger_fw_pattern.write("scan$id")

        @go.putter  # type: ignore[no-redef]
        async def go(self, instance: Any, value: Any) -> int:
            if int(value) == 1 and (self._task is None or self._task.done()):
                self._abort = False
                self._task = asyncio.get_running_loop().create_task(self.play())
            return 0

        @burst.putter  # type: ignore[no-redef]
        async def burst(self, instance: Any, value: Any) -> int:
            if int(value) > 0 and (self._task is None or self._task.done()):
                self._abort = False
                self._task = asyncio.get_running_loop().create_task(self.play(int(value)))
            return 0

        @abort.putter  # type: ignore[no-redef]
        async def abort(self, instance: Any, value: Any) -> int:
            if int(value) == 1:
                self._abort = True
            return 0

        async def play(self, count: int = 1) -> None:
            every = int(self.abort_every.value) if count > 1 else 0
            try:
                for k in range(count):
                    if k:
                        await asyncio.sleep(max(0.0, float(self.gap.value)))
                    self._abort = False
                    points = int(self.npts2.value) * int(self.npts1.value)
                    self.abort_after_points = points // 2 if every > 0 and (k + 1) % every == 0 else None
                    await play_scan(self)
            except Exception:
                log.exception("simulated scan failed")
                await self.set(self.status, "error")
            finally:
                self.abort_after_points = None

    return SimBeamline


def _next_scan_number(saved: dict[str, Any], first_scan: int) -> int:
    if "next_scan_number" in saved:
        return int(saved["next_scan_number"])
    if "scan_number" in saved:  # written by an older simioc: the last scan played
        return int(saved["scan_number"]) + 1
    return first_scan + 1


def _load_autosave(data_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((data_dir / AUTOSAVE).read_text()))
    except (OSError, ValueError):
        return {}


def _autosave(data_dir: Path, next_scan_number: int) -> None:
    tmp = data_dir / (AUTOSAVE + ".tmp")
    tmp.write_text(json.dumps({"next_scan_number": next_scan_number}))
    os.replace(tmp, data_dir / AUTOSAVE)


async def play_scan(ioc: Any) -> None:
    """One scan: toggle the PVs in a beamline's order while writing the files row by row."""
    import h5py

    if ioc.pva is not None:
        ioc.pva.post_all()  # values CA clients changed since the last scan
    rows, cols = int(ioc.npts2.value), int(ioc.npts1.value)
    geom = SimGeometry(rows=rows, cols=cols, size_px=ioc.size_px, energy_kev=float(ioc.energy.value),
                       detector_distance_m=float(ioc.det_distance.value) * 1e-3,
                       step_m=(float(ioc.step2.value) * 1e-6, float(ioc.step1.value) * 1e-6))
    patterns = simulate_patterns(geom)
    fail = int(ioc.fail.value) == 1
    if fail:
        await ioc.fail.write(0)
    # saveData at scan start: the file is named from the scan number, then the number is incremented
    number = int(ioc.scan_number.value)
    name = f"scan{number}"
    _autosave(ioc.data_dir, number + 1)
    await ioc.set(ioc.save_file_name, f"{ioc.base_name.value}{number:04d}.mda")
    await ioc.set(ioc.scan_number, number + 1)
    await ioc.set(ioc.file_name, name)
    await ioc.set(ioc.num_capture, 0 if int(ioc.unlimited.value) else rows * cols)
    await ioc.set(ioc.num_captured, 0)
    await ioc.set(ioc.file_number, 1)  # the scan's files count from 1
    await ioc.set(ioc.write_status, "Write OK")
    await ioc.set(ioc.write_message, "")
    await ioc.set(ioc.eiger_num_images, rows * cols)
    await ioc.set(ioc.eiger_counter, 0)
    await ioc.set(ioc.eiger_fw_per_file, cols)
    await ioc.set(ioc.eiger_sequence_id, number)  # armed: the DCU names this series' files
    live = open_live_file(ioc, name, geom.size_px, number)
    stream = None
    if ioc.live_pva is not None:  # before BUSY rises: the scan's plan and status 0 (acquiring)
        from reconstruction.positions import positions_m_from_parameters

        stream = ioc.live_pva.begin(positions_m_from_parameters(geom.parameters()))
    await ioc.set(ioc.cpt2, 0)
    await ioc.set(ioc.smsg2, "Scanning")
    await ioc.set(ioc.capture, "Capture")
    await ioc.set(ioc.eiger_acquire, "Acquire")
    await ioc.set(ioc.busy2, 1)
    await ioc.set(ioc.status, "scanning")  # after BUSY: "scanning" means BUSY is already 1
    if ioc.runs is not None:
        ioc.runs.start(dict(scan_id=number, plan_name="ptycho_raster", num_points=rows * cols,
                            data_dir=str(ioc.data_dir), file_name=name, energy_keV=geom.energy_kev,
                            detector_distance_m=geom.detector_distance_m, scan_dims=[rows, cols],
                            step_um=[float(ioc.step2.value), float(ioc.step1.value)]))
    point_s = max(0.0, float(ioc.point_time.value))
    if stream is not None:
        waited_s = await asyncio.to_thread(stream.wait_s, float(ioc.live_wait.value))
        log.info("scan %s: the first frame waited %.3f s for a client of the image PV", name, waited_s)
    started_s = time.monotonic()
    late_s = max(0.0, float(ioc.late_write.value))
    captured, aborted, failed = 0, False, False
    held: tuple[Any, Path, int] | None = None  # the last file, left open when writing late
    for row in range(rows):
        path = data_file(ioc.data_dir, name, row + 1)
        tmp = path.with_name(path.name + ".tmp")
        await ioc.set(ioc.full_file_name, str(path))
        await ioc.set(ioc.file_number, row + 2)  # NDFileHDF5 AutoIncrement: the number moves on at the open
        await ioc.set(ioc.busy1, 1)
        f = h5py.File(tmp, "w")
        dset = f.create_dataset(DATASET, shape=(0, geom.size_px, geom.size_px),
                                maxshape=(None, geom.size_px, geom.size_px), dtype=np.uint32,
                                chunks=(1, geom.size_px, geom.size_px))
        if ioc.nxmx:
            write_nxmx_metadata(f, geom)
        last_row = row == rows - 1
        for col in range(cols):
            if ioc._abort or (ioc.abort_after_points is not None and captured >= ioc.abort_after_points):
                aborted = True
                break
            if fail and row == min(1, rows - 1) and col == cols // 2:
                failed = True
                break
            if last_row and late_s > 0 and col == cols - 1:
                held = (f, tmp, row * cols + col)  # the detector still flushes this frame
                break
            # paced from the scan's start: point k is taken at start + (k + 1) x PointTime, however long the
            # PV and file writes of the points before took (a detector's frame rate does not drift)
            await asyncio.sleep(max(0.0, started_s + (row * cols + col + 1) * point_s - time.monotonic()))
            dset.resize(col + 1, axis=0)
            dset[col] = patterns[row * cols + col]
            if live is not None:
                live.append(patterns[row * cols + col], row * cols + col)
            if stream is not None:
                stream.append(patterns[row * cols + col], row * cols + col)
            captured += 1
            await ioc.set(ioc.num_captured, captured)
            await ioc.set(ioc.eiger_counter, captured)
            await ioc.set(ioc.cpt1, col + 1)
            if ioc.runs is not None:
                ioc.runs.event(row * geom.step_m[0] * 1e6, col * geom.step_m[1] * 1e6)
        await ioc.set(ioc.busy1, 0)
        if held is None:
            f.close()
            os.replace(tmp, path)
        if aborted or failed:
            break
        await ioc.set(ioc.cpt2, row + 1)
    if failed:
        await ioc.set(ioc.write_status, "Write error")
        await ioc.set(ioc.write_message, "Error writing file: No space left on device")
        await ioc.set(ioc.smsg2, "Scan failed: detector write error")
    elif aborted:
        await ioc.set(ioc.smsg2, "Scan aborted by operator")
    else:
        await ioc.set(ioc.smsg2, "SCAN Complete")
    if live is not None and held is None:
        live.end(aborted=aborted or failed)
        live.close()
    if stream is not None and held is None:
        stream.end(aborted=aborted or failed)
    await ioc.set(ioc.busy2, 0)
    await ioc.set(ioc.eiger_acquire, "Done")
    if ioc.runs is not None:
        status = "fail" if failed else "abort" if aborted else "success"
        ioc.runs.stop(status, str(ioc.smsg2.value) if status != "success" else "")
    if held is not None:
        f, tmp, k = held
        await asyncio.sleep(late_s)
        dset = f[DATASET]
        dset.resize(dset.shape[0] + 1, axis=0)
        dset[-1] = patterns[k]
        f.close()
        if live is not None:
            live.append(patterns[k], k)
            live.end()
            live.close()
        if stream is not None:
            stream.append(patterns[k], k)
            stream.end()
        os.replace(tmp, data_file(ioc.data_dir, name, rows))
        captured += 1
        await ioc.set(ioc.num_captured, captured)
        await ioc.set(ioc.eiger_counter, captured)
    await ioc.set(ioc.capture, "Done")
    if not (aborted or failed):
        master = write_master(ioc.data_dir, name, geom, number, rows)
        await ioc.set(ioc.last_scan_file, str(master))
    await ioc.set(ioc.scans_done, int(ioc.scans_done.value) + 1)
    await ioc.set(ioc.status, "idle")


def live_file(data_dir: Path, name: str) -> Path:
    """The SWMR file a scan ``name`` streams into with ``--live-file`` (its frames in scan order)."""
    return data_dir / f"{name}_live.h5"


def open_live_file(ioc: Any, name: str, size_px: int, number: int) -> LiveFile | None:
    """The scan's :class:`LiveFile` on :func:`live_file`, opened before the scan starts as NDFileHDF5 in stream
    mode opens its file at Capture (None without ``--live-file``); ``sim:LiveShuffle`` and ``sim:LiveDark`` are
    read now."""
    if not ioc.live_file:
        return None
    from reconstruction.live.simwrite import SwmrWriter

    writer = SwmrWriter(live_file(ioc.data_dir, name), (size_px, size_px), dtype=np.uint32, dataset=DATASET)
    return LiveFile(writer, int(ioc.live_shuffle.value), seed=number, dark=int(ioc.live_dark.value))


class LiveFile:
    """The SWMR file a scan streams into: each frame written as it is captured or, with a ``block`` of B > 1, held
    until B frames are there and written in a shuffled order (frames that reach the file out of order); scan point
    ``dark`` (>= 0) is written all zeros (a fault: no photons)."""

    def __init__(self, writer: Any, block: int, seed: int = 0, dark: int = -1):
        self.writer, self.block, self.dark = writer, max(1, block), dark
        self.rng = np.random.default_rng(seed)
        self.pending: list[tuple[np.ndarray, int]] = []

    def append(self, frame: np.ndarray, index: int) -> None:
        self.pending.append((np.zeros_like(frame) if index == self.dark else frame, index))
        if len(self.pending) >= self.block:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        order = self.rng.permutation(len(self.pending)) if self.block > 1 else range(len(self.pending))
        chosen = [self.pending[int(i)] for i in order]
        self.writer.append(np.stack([f for f, _ in chosen]), [k for _, k in chosen])
        self.pending = []

    def end(self, aborted: bool = False) -> None:
        self.flush()
        self.writer.end(aborted)

    def close(self) -> None:
        self.writer.close()


def loopback_env(port: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Channel Access server variables for a private loopback IOC on ``port`` (repeater/beacons on port+1)."""
    env = dict(os.environ if environ is None else environ)
    env.update(EPICS_CA_SERVER_PORT=str(port), EPICS_CA_REPEATER_PORT=str(port + 1),
               EPICS_CAS_INTF_ADDR_LIST="127.0.0.1", EPICS_CAS_BEACON_PORT=str(port + 1),
               EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO", EPICS_CAS_BEACON_ADDR_LIST="127.0.0.1")
    return env


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptychopy simioc", description="A simulated beamline IOC that plays "
                                "ptychography scans (Channel Access on loopback).")
    p.add_argument("--prefix", default="ptysim:", help="PV prefix (default ptysim:)")
    p.add_argument("--data-dir", default="simioc-data", help="where the scan files are written")
    p.add_argument("--rows", type=int, default=10, help="scan rows (scan2.NPTS) at start")
    p.add_argument("--cols", type=int, default=10, help="scan columns (scan1.NPTS) at start")
    p.add_argument("--size", type=int, default=64, help="pattern size in pixels")
    p.add_argument("--first-scan", type=int, default=0, help="scan number before the first scan "
                   "(when no autosave file exists)")
    p.add_argument("--point-time", type=float, default=0.005, help="seconds per scan point")
    p.add_argument("--port", type=int, default=None, help="CA server port; also sets the loopback "
                   "repeater/beacon variables (port+1)")
    p.add_argument("--interface", default="127.0.0.1", help="interface to serve on (default loopback)")
    p.add_argument("--pva-port", type=int, default=None, help="also serve every PV over pvAccess on this TCP "
                   "port (UDP search on port+1)")
    p.add_argument("--zmq-proxy", default="", help="publish each scan as a bluesky run to this 0MQ proxy's in "
                   "address (host:port)")
    p.add_argument("--zmq-serializer", default="pickle", choices=("pickle", "msgpack", "json"),
                   help="the Publisher's serializer (default pickle, bluesky's)")
    p.add_argument("--autoplay", type=int, default=-1, help="play this many scans by itself (0 = forever)")
    p.add_argument("--period", type=float, default=20.0, help="seconds between autoplayed scans")
    p.add_argument("--nxmx", action="store_true", help="each data file records the geometry where NXmx puts it "
                   "(wavelength, detector distance, pixel size, beam centre, pixel mask)")
    p.add_argument("--live-file", action="store_true", help="each scan also writes <data-dir>/scanN_live.h5 "
                   "frame by frame with SWMR, opened before BUSY rises (what a streaming job reads)")
    p.add_argument("--live-pva", type=int, default=None, metavar="PORT", help="each scan also streams its frames "
                   "over pvAccess on this TCP port (UDP search on PORT+1) as --stream pva serves them "
                   "(<P>Pva1:Image, <P>Scan:Positions, <P>Scan:Planned, <P>Scan:Status); the first frame waits up to "
                   "sim:LiveWait s for a client of the image PV")
    p.add_argument("--list-pvs", action="store_true", help="print the PV names and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    from .simioc_stream import add_arguments

    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s simioc %(levelname)s %(message)s")
    if args.port is not None:
        os.environ.update(loopback_env(args.port, {}))
    elif args.interface.startswith("127."):
        os.environ.setdefault("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "NO")
        os.environ.setdefault("EPICS_CAS_BEACON_ADDR_LIST", "127.0.0.1")
    if args.stream:
        from .simioc_stream import main as stream

        return stream(args)
    data_dir = Path(args.data_dir).resolve()
    group_cls = make_group_class()
    ioc = group_cls(prefix=args.prefix, data_dir=data_dir, size_px=args.size, first_scan=args.first_scan,
                    nxmx=args.nxmx)
    if args.list_pvs:
        for name in ioc.pvdb:
            print(name)
        return 0
    ioc.live_file = bool(args.live_file)
    data_dir.mkdir(parents=True, exist_ok=True)
    from caproto.asyncio.server import run

    async def startup(async_lib: Any) -> None:
        await ioc.npts2.write(args.rows)
        await ioc.npts1.write(args.cols)
        await ioc.point_time.write(args.point_time)
        if args.pva_port is not None:
            from .simioc_pva import PvaMirror, pva_server_conf

            ioc.pva = PvaMirror(ioc.pvdb, pva_server_conf(args.pva_port, args.interface),
                                asyncio.get_running_loop())
        if args.live_pva is not None:
            from .simioc_pva import pva_server_conf
            from .simioc_stream import ScanStream

            ioc.live_pva = ScanStream(args.prefix, pva_server_conf(args.live_pva, args.interface))
        if args.zmq_proxy:
            from .simioc_bluesky import RunPublisher

            ioc.runs = RunPublisher(args.zmq_proxy, args.zmq_serializer)
            log.info("publishing bluesky documents to %s (%s)", args.zmq_proxy, args.zmq_serializer)
        if args.autoplay >= 0:
            asyncio.get_running_loop().create_task(_autoplay(ioc, args.autoplay, args.period))

    log.info("simulated beamline %s on %s port %s, data in %s", args.prefix, args.interface,
             os.environ.get("EPICS_CA_SERVER_PORT", "5064"), data_dir)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run(ioc.pvdb, interfaces=[args.interface], startup_hook=startup)
    finally:
        if ioc.pva is not None:
            ioc.pva.close()
        if ioc.runs is not None:
            ioc.runs.close()
        if ioc.live_pva is not None:
            ioc.live_pva.close()
    return 0


async def _autoplay(ioc: Any, count: int, period_s: float) -> None:
    played = 0
    while count == 0 or played < count:
        await asyncio.sleep(period_s)
        await ioc.go.write(1)
        played += 1


if __name__ == "__main__":
    sys.exit(main())
