"""``ptychopy simioc``: a caproto IOC on loopback that plays ptychography scans, for demos and tests.

PVs (prefix ``P``, default ``ptysim:``) mimic a beamline: an outer sscan record ``scan2`` (rows) with ``BUSY``,
``SMSG``, ``NPTS``, ``CPT``, ``P1SI`` (step, um) over an inner ``scan1`` (columns); ``saveData_scanNumber`` and
``saveData_fullPathName``; an areaDetector HDF5 plugin ``HDF1:`` (``FilePath``, ``FileName``,
``FullFileName_RBV``, ``Capture_RBV``, ``NumCapture_RBV``, ``NumCaptured_RBV``, ``WriteStatus``,
``WriteMessage``); ``energy`` (keV) and ``detDistance`` (mm). Control: put 1 to ``sim:Go`` to play a scan, 1 to
``sim:Abort`` to abort it; ``sim:PointTime`` (s per point) and ``sim:LateWrite`` (s the last file is still being
written after ``scan2.BUSY`` drops). Each row is written as ``name_data_NNNNNN.h5.tmp`` and renamed on close.
The scan number is kept in ``<data-dir>/.simioc_autosave.json`` across restarts, like autosave would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .simdata import DATASET, SimGeometry, data_file, simulate_patterns, write_master

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
        npts2 = pvproperty(name="scan2.NPTS", value=4, doc="rows")
        cpt2 = pvproperty(name="scan2.CPT", value=0, doc="rows done")
        step2 = pvproperty(name="scan2.P1SI", value=0.5, doc="row step (um)")
        busy1 = pvproperty(name="scan1.BUSY", value=0, doc="inner scan busy (toggles every row)")
        npts1 = pvproperty(name="scan1.NPTS", value=5, doc="columns")
        cpt1 = pvproperty(name="scan1.CPT", value=0, doc="columns done in this row")
        step1 = pvproperty(name="scan1.P1SI", value=0.5, doc="column step (um)")
        scan_number = pvproperty(name="saveData_scanNumber", value=0, doc="number of the current/last scan")
        full_path_name = _char("saveData_fullPathName", "master file of the last completed scan")
        file_path = _char("HDF1:FilePath", "data directory")
        file_name = _char("HDF1:FileName", "base name of the scan's files")
        full_file_name = _char("HDF1:FullFileName_RBV", "file being written (set on open)")
        capture = pvproperty(name="HDF1:Capture_RBV", value="Done", dtype=ChannelType.ENUM,
                             enum_strings=("Done", "Capture"), doc="file plugin capturing")
        num_capture = pvproperty(name="HDF1:NumCapture_RBV", value=0, doc="frames to capture")
        num_captured = pvproperty(name="HDF1:NumCaptured_RBV", value=0, doc="frames captured")
        write_status = pvproperty(name="HDF1:WriteStatus", value="Write OK", dtype=ChannelType.ENUM,
                                  enum_strings=("Write OK", "Write error"), doc="file writer error flag")
        write_message = _char("HDF1:WriteMessage", "file writer message")
        energy = pvproperty(name="energy", value=8.8, doc="photon energy (keV)")
        det_distance = pvproperty(name="detDistance", value=1900.0, doc="sample-detector distance (mm)")
        go = pvproperty(name="sim:Go", value=0, doc="put 1 to play one scan")
        abort = pvproperty(name="sim:Abort", value=0, doc="put 1 to abort the running scan")
        point_time = pvproperty(name="sim:PointTime", value=0.005, doc="seconds per point")
        late_write = pvproperty(name="sim:LateWrite", value=0.0, doc="seconds the last file lags BUSY 1->0")
        status = pvproperty(name="sim:Status", value="idle", dtype=ChannelType.STRING, doc="idle/scanning")
        scans_done = pvproperty(name="sim:ScansDone", value=0, doc="scans played since start")

        def __init__(self, *args: Any, data_dir: Path, size_px: int, first_scan: int, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.data_dir = data_dir
            self.size_px = size_px
            self.first_scan = first_scan
            self._task: asyncio.Task[None] | None = None
            self._abort = False

        @scan_number.startup  # type: ignore[no-redef]
        async def scan_number(self, instance: Any, async_lib: Any) -> None:
            saved = _load_autosave(self.data_dir)
            await self.scan_number.write(int(saved.get("scan_number", self.first_scan)))
            await self.file_path.write(str(self.data_dir))

        @go.putter  # type: ignore[no-redef]
        async def go(self, instance: Any, value: Any) -> int:
            if int(value) == 1 and (self._task is None or self._task.done()):
                self._abort = False
                self._task = asyncio.get_running_loop().create_task(self.play())
            return 0

        @abort.putter  # type: ignore[no-redef]
        async def abort(self, instance: Any, value: Any) -> int:
            if int(value) == 1:
                self._abort = True
            return 0

        async def play(self) -> None:
            try:
                await play_scan(self)
            except Exception:
                log.exception("simulated scan failed")
                await self.status.write("error")

    return SimBeamline


def _load_autosave(data_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((data_dir / AUTOSAVE).read_text()))
    except (OSError, ValueError):
        return {}


def _autosave(data_dir: Path, scan_number: int) -> None:
    tmp = data_dir / (AUTOSAVE + ".tmp")
    tmp.write_text(json.dumps({"scan_number": scan_number}))
    os.replace(tmp, data_dir / AUTOSAVE)


async def play_scan(ioc: Any) -> None:
    """One scan: toggle the PVs in a beamline's order while writing the files row by row."""
    import h5py

    rows, cols = int(ioc.npts2.value), int(ioc.npts1.value)
    geom = SimGeometry(rows=rows, cols=cols, size_px=ioc.size_px, energy_kev=float(ioc.energy.value),
                       detector_distance_m=float(ioc.det_distance.value) * 1e-3,
                       step_m=(float(ioc.step2.value) * 1e-6, float(ioc.step1.value) * 1e-6))
    patterns = simulate_patterns(geom)
    number = int(ioc.scan_number.value) + 1
    name = f"scan{number}"
    _autosave(ioc.data_dir, number)
    await ioc.scan_number.write(number)
    await ioc.file_name.write(name)
    await ioc.num_capture.write(rows * cols)
    await ioc.num_captured.write(0)
    await ioc.write_status.write("Write OK")
    await ioc.write_message.write("")
    await ioc.cpt2.write(0)
    await ioc.smsg2.write("Scanning")
    await ioc.capture.write("Capture")
    await ioc.busy2.write(1)
    await ioc.status.write("scanning")  # after BUSY: "scanning" means BUSY is already 1
    point_s = max(0.0, float(ioc.point_time.value))
    late_s = max(0.0, float(ioc.late_write.value))
    captured, aborted = 0, False
    held: tuple[Any, Path, int] | None = None  # the last file, left open when writing late
    for row in range(rows):
        path = data_file(ioc.data_dir, name, row + 1)
        tmp = path.with_name(path.name + ".tmp")
        await ioc.full_file_name.write(str(path))
        await ioc.busy1.write(1)
        f = h5py.File(tmp, "w")
        dset = f.create_dataset(DATASET, shape=(0, geom.size_px, geom.size_px),
                                maxshape=(None, geom.size_px, geom.size_px), dtype=np.uint32,
                                chunks=(1, geom.size_px, geom.size_px))
        last_row = row == rows - 1
        for col in range(cols):
            if ioc._abort:
                aborted = True
                break
            if last_row and late_s > 0 and col == cols - 1:
                held = (f, tmp, row * cols + col)  # the detector still flushes this frame
                break
            await asyncio.sleep(point_s)
            dset.resize(col + 1, axis=0)
            dset[col] = patterns[row * cols + col]
            captured += 1
            await ioc.num_captured.write(captured)
            await ioc.cpt1.write(col + 1)
        await ioc.busy1.write(0)
        if held is None:
            f.close()
            os.replace(tmp, path)
        if aborted:
            break
        await ioc.cpt2.write(row + 1)
    if aborted:
        await ioc.smsg2.write("Scan aborted by operator")
    else:
        await ioc.smsg2.write("SCAN Complete")
    await ioc.busy2.write(0)
    if held is not None:
        f, tmp, k = held
        await asyncio.sleep(late_s)
        dset = f[DATASET]
        dset.resize(dset.shape[0] + 1, axis=0)
        dset[-1] = patterns[k]
        f.close()
        os.replace(tmp, data_file(ioc.data_dir, name, rows))
        captured += 1
        await ioc.num_captured.write(captured)
    await ioc.capture.write("Done")
    if not aborted:
        master = write_master(ioc.data_dir, name, geom, number, rows)
        await ioc.full_path_name.write(str(master))
    await ioc.scans_done.write(int(ioc.scans_done.value) + 1)
    await ioc.status.write("idle")


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
    p.add_argument("--rows", type=int, default=4, help="scan rows (scan2.NPTS) at start")
    p.add_argument("--cols", type=int, default=5, help="scan columns (scan1.NPTS) at start")
    p.add_argument("--size", type=int, default=64, help="pattern size in pixels")
    p.add_argument("--first-scan", type=int, default=0, help="scan number before the first scan "
                   "(when no autosave file exists)")
    p.add_argument("--point-time", type=float, default=0.005, help="seconds per scan point")
    p.add_argument("--port", type=int, default=None, help="CA server port; also sets the loopback "
                   "repeater/beacon variables (port+1)")
    p.add_argument("--interface", default="127.0.0.1", help="interface to serve on (default loopback)")
    p.add_argument("--autoplay", type=int, default=-1, help="play this many scans by itself (0 = forever)")
    p.add_argument("--period", type=float, default=20.0, help="seconds between autoplayed scans")
    p.add_argument("--list-pvs", action="store_true", help="print the PV names and exit")
    p.add_argument("-v", "--verbose", action="store_true")
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
    data_dir = Path(args.data_dir).resolve()
    group_cls = make_group_class()
    ioc = group_cls(prefix=args.prefix, data_dir=data_dir, size_px=args.size, first_scan=args.first_scan)
    if args.list_pvs:
        for name in ioc.pvdb:
            print(name)
        return 0
    data_dir.mkdir(parents=True, exist_ok=True)
    from caproto.asyncio.server import run

    async def startup(async_lib: Any) -> None:
        await ioc.npts2.write(args.rows)
        await ioc.npts1.write(args.cols)
        await ioc.point_time.write(args.point_time)
        if args.autoplay >= 0:
            asyncio.get_running_loop().create_task(_autoplay(ioc, args.autoplay, args.period))

    log.info("simulated beamline %s on %s port %s, data in %s", args.prefix, args.interface,
             os.environ.get("EPICS_CA_SERVER_PORT", "5064"), data_dir)
    with contextlib.suppress(KeyboardInterrupt):
        run(ioc.pvdb, interfaces=[args.interface], startup_hook=startup)
    return 0


async def _autoplay(ioc: Any, count: int, period_s: float) -> None:
    played = 0
    while count == 0 or played < count:
        await asyncio.sleep(period_s)
        await ioc.go.write(1)
        played += 1


if __name__ == "__main__":
    sys.exit(main())
