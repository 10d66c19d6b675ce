"""The bytes the EPICS bridge's buffer of a scan's first frames (``ptychopy/pva_buffer.py``) receives per scan from
the detector, against the bytes the scan's streaming job receives (issue 21; docs/streaming.md, "Frames before the
job subscribed").

Each scan: ``ptychopy simioc --stream pva`` (a process of its own, on loopback) plays one scan; a
:class:`~ptychopy.pva_buffer.FrameBuffer` (the bridge's standing subscriber) monitors it from before its first frame;
``--late-frames`` frames in, a job's :class:`~ptychopy.pva_source.PvaSource` subscribes (as a job the bridge opened
at ``BUSY`` does, a second or more later), takes the held frames from the buffer and every frame after on its own,
to the scan's end. Measured: the TCP bytes the buffer's client connection and the job's received from simioc (``ss
-tin``, the kernel's ``bytes_received`` of each socket), the buffer's ``frame_bytes_in`` (the pixel bytes it decoded;
absent before it had a pixel monitor of its own) and the job's frames (received, from the buffer, dropped).

    python -m benchmarks.pva_buffer_traffic --scans 3 --size 256 --dims 30,30 --rate 200 --late-frames 200

Run it against an older tree with ``PYTHONPATH=<that tree> python benchmarks/pva_buffer_traffic.py ...``: the
figures of both come from the sockets. Prints one JSON line per scan, then a summary line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Any


def socket_bytes_received(server_port: int) -> dict[int, int]:
    """Local port -> bytes received, of this process's TCP connections to 127.0.0.1:``server_port`` (``ss``)."""
    out = subprocess.run(["ss", "-tinH", "-p", f"dst 127.0.0.1:{server_port}"], capture_output=True, text=True,
                         check=True).stdout
    got: dict[int, int] = {}
    mine = f"pid={os.getpid()},"
    for block in re.split(r"\n(?=\S)", out):
        local = re.search(r"\s127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:" + str(server_port), block)
        received = re.search(r"bytes_received:(\d+)", block)
        if local and mine in block:
            got[int(local.group(1))] = int(received.group(1)) if received else 0
    return got


def one_scan(args: argparse.Namespace, scan: int) -> dict[str, Any]:
    """Play one scan through simioc with the buffer and a late job: the figures of the module docstring."""
    import numpy as np
    from p4p.client.thread import Context

    from epics_bridge.simioc_pva import pva_client_env
    from ptychopy.pva_buffer import FrameBuffer
    from ptychopy.pva_source import PvaSource
    from reconstruction.live import ENDED, PlannedScan

    procs = importlib.import_module("benchmarks.latency.procs")  # (by name: mypy sees it twice)
    free_port, wait_for = procs.free_port, procs.wait_for
    rows, cols = args.dims
    port = procs.free_port_pair()
    prefix = f"bt{port}:"
    cmd = [sys.executable, "-m", "ptychopy", "simioc", "--stream", "pva", "--pva-port", str(port), "--prefix", prefix,
           "--scan", f"./ptycho -size={args.size} -scanDims={rows},{cols} -photons=1e6 -seed=0", "--rate",
           str(args.rate), "--distinct", "16", "--start-delay", "1.0", "--linger", "3"]
    ioc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert ioc.stdout is not None
        serving = json.loads(ioc.stdout.readline())
        address = str(serving["serving"])
        conf = pva_client_env(port)
        buffer = FrameBuffer(address, f"127.0.0.1:{free_port()}", f"{prefix}Frames", int(args.buffer_mib * 2**20),
                             conf=conf).start()
        try:
            wait_for(lambda: socket_bytes_received(port), 20, "the buffer's connection to simioc")
            bridge_ports = set(socket_bytes_received(port))
            wait_for(lambda: buffer.stats()["frames_seen"] >= args.late_frames, 60, "the scan's first frames")
            planned = PlannedScan(np.zeros((rows * cols, 2)), None, "benchmark")
            source_address = f"{address}&buffer={buffer.pv_name}&buffer_at=127.0.0.1:{buffer.port}"
            ctx = Context("pva", nt=False, conf=conf, useenv=False)
            source = PvaSource(source_address, planned, connect_s=20, ctx=ctx)
            try:
                taken: list[int] = []
                deadline = time.monotonic() + 60
                while source.state() != ENDED:
                    if time.monotonic() > deadline:
                        missing = sorted(set(range(rows * cols)) - set(taken))[:10]
                        raise RuntimeError(f"the job took {len(taken)} frames (missing scan points {missing}, holding "
                                           f"back {source.holding_back()}, dropped {source.dropped}); the buffer: "
                                           f"{buffer.stats()}")
                    batch = source.poll()
                    if batch is None:
                        time.sleep(0.01)
                    else:
                        taken.extend(batch.indices.tolist())
                time.sleep(0.5)  # the last updates at the buffer
                sockets = socket_bytes_received(port)
                stats = buffer.stats()
            finally:
                source.close()
                ctx.close()
        finally:
            buffer.stop()
        frame_bytes = args.size * args.size * 4
        bridge = sum(b for p, b in sockets.items() if p in bridge_ports)
        job = sum(b for p, b in sockets.items() if p not in bridge_ports)
        return {"scan": scan, "frames": rows * cols, "frame_bytes": frame_bytes, "rate_hz": args.rate,
                "bridge_bytes_received": bridge, "job_bytes_received": job,
                "bridge_frames_worth": round(bridge / frame_bytes, 1), "frame_bytes_in": stats.get("frame_bytes_in"),
                "pixel_opens": stats.get("pixel_opens"), "job_frames": len(taken), "job_dropped": source.dropped,
                "job_frames_from_buffer": source.frames_from_buffer, "job_dropped_detail": source.dropped_detail}
    finally:
        ioc.wait(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scans", type=int, default=3)
    p.add_argument("--size", type=int, default=256, help="frame side, pixels (float32)")
    p.add_argument("--dims", type=lambda s: tuple(int(x) for x in s.split(",")), default=(30, 30),
                   help="scan points ROWS,COLS")
    p.add_argument("--rate", type=float, default=200.0, help="frames per second")
    p.add_argument("--late-frames", type=int, default=200, help="frames posted before the job subscribes")
    p.add_argument("--buffer-mib", type=float, default=1024.0, help="[stream] buffer_mib")
    args = p.parse_args(argv)
    results = []
    for k in range(args.scans):
        results.append(one_scan(args, k))
        print(json.dumps(results[-1]), flush=True)
    bridge = [r["bridge_bytes_received"] for r in results]
    job = [r["job_bytes_received"] for r in results]
    print(json.dumps({"summary": True, "bridge_mb_per_scan": [round(b / 1e6, 2) for b in bridge],
                      "job_mb_per_scan": [round(b / 1e6, 2) for b in job],
                      "dropped": [r["job_dropped"] for r in results]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
