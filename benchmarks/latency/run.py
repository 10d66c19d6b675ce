"""Play scans one after another and time every hop from the completion PV edge to frames in the viewers.

Times (all ``time.time()`` on this one machine):

- ``busy0``: the IOC's time stamp of its ``scan2.BUSY`` 1 -> 0 write (read back from the IOC after the scan);
- ``complete`` / ``file_complete`` / ``submitted``: the bridge journal's events for the scan's dedup key
  (``complete`` = the trigger classified the scan after its debounce, ``file_complete`` = the file check passed);
- ``queued`` / ``started``: the job row's ``created`` and ``started``;
- ``t_produced``: the frame header's producer time (the hook in :mod:`benchmarks.latency.hooks`);
- ``recv``: when a websocket viewer (logged in as a user, as the live page is) received the frame.

The benchmark learns the new job's id by reading the jobs table every 10 ms (measurement side only), then opens
its viewers; each viewer's first message is the connect-time replay of the stored frame and is left out of the
frame-latency figures (it still counts as "first frame received" when the worker's first frame came earlier).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from .rig import Rig

FINAL = frozenset({"done", "failed", "cancelled"})


@dataclass
class Message:
    recv: float
    seq: int
    iteration: int
    status: str
    n_images: int
    t_produced: float | None
    replay: bool


@dataclass
class ViewerLog:
    index: int
    connect_started: float = 0.0
    connected_at: float = 0.0
    messages: list[Message] = field(default_factory=list)
    error: str = ""


def _header(message: bytes) -> dict[str, Any]:
    (n,) = struct.unpack(">I", message[:4])
    return dict(json.loads(message[4:4 + n]))


async def _viewer(rig: Rig, job_id: int, index: int, timeout_s: float) -> ViewerLog:
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    from webapp.live.subprotocol import PROTOCOL

    out = ViewerLog(index)
    url = rig.base_url.replace("http://", "ws://") + f"/ws/jobs/{job_id}/"
    deadline = time.monotonic() + timeout_s
    out.connect_started = time.time()
    try:
        async with connect(url, origin=rig.base_url, additional_headers={"Cookie": rig.cookie},  # type: ignore[arg-type]
                           subprotocols=[Subprotocol(PROTOCOL)], proxy=None, open_timeout=10,
                           max_size=8 * 2**20, compression=None) as ws:
            out.connected_at = time.time()
            first = True
            while time.monotonic() < deadline:
                try:
                    msg = await asyncio.wait_for(ws.recv(), timeout=max(0.05, deadline - time.monotonic()))
                except TimeoutError:
                    out.error = "timed out"
                    break
                recv = time.time()
                if isinstance(msg, str):
                    continue
                h = _header(msg)
                tp = h.get("t_produced")
                out.messages.append(Message(recv, int(h.get("seq", 0)), int(h.get("iteration") or 0),
                                            str(h.get("status", "")), len(h.get("images") or []),
                                            float(tp) if tp is not None else None, first))
                first = False
                if h.get("status") in FINAL:
                    break
    except Exception as exc:  # a viewer that fails is reported, the run goes on
        out.error = f"{type(exc).__name__}: {exc}"
    return out


async def _find_job(rig: Rig, last_id: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = rig.jobs_after(last_id)
        if rows:
            return rows[0]
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no job appeared within {timeout_s:g} s; bridge state: {rig.bridge_state()}")


async def _job_final(rig: Rig, job_id: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rows = [r for r in rig.jobs_after(job_id - 1) if r["id"] == job_id]
        row = rows[0] if rows else {}
        if row.get("status") in FINAL:
            return row
        await asyncio.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not finish in {timeout_s:g} s: {row}")


async def play_one(rig: Rig, viewers: int, last_id: int, timeout_s: float = 180.0) -> dict[str, Any]:
    """One scan: Go, find the job, watch it with ``viewers`` websockets until it ends; every time stamp."""
    done_before = int(rig.ioc_get("sim:ScansDone"))
    t_go = time.time()
    rig.ioc_put("sim:Go", 1)
    job = await _find_job(rig, last_id, 60.0)
    t_seen = time.time()
    logs = await asyncio.gather(*(_viewer(rig, job["id"], k, timeout_s) for k in range(viewers)))
    row = await _job_final(rig, job["id"], 30.0)
    await asyncio.to_thread(lambda: _wait_scan_done(rig, done_before))
    busy, t_busy0 = rig.ioc_timestamp("scan2.BUSY")
    key = row["dedup_key"] or rig.journal_key(row["id"])  # an API job has its key only in the bridge's journal
    events = rig.journal_events(key)
    return dict(job=row["id"], status=row["status"], message=row["message"], dedup_key=key,
                viewers=viewers, t_go=t_go, t_busy0=t_busy0 if int(busy) == 0 else None, t_seen=t_seen,
                journal=events, queued=row["created"], started=row["started"], finished=row["finished"],
                viewer_logs=[dict(index=v.index, connect_started=v.connect_started, connected_at=v.connected_at,
                                  error=v.error,
                                  messages=[m.__dict__ for m in v.messages]) for v in logs])


async def play_burst(rig: Rig, count: int, gap_s: float, last_id: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """``count`` scans back to back, ``gap_s`` apart (simioc's ``sim:Burst``), no viewers: every scan end the
    bridge journalled (IOC time stamp of the edge, outcome) and every job that appeared, once all have finished
    or ``timeout_s`` passed (then ``timed_out`` is set)."""
    done_before = int(rig.ioc_get("sim:ScansDone"))
    t_go = time.time()
    rig.ioc_put("sim:Gap", gap_s)
    rig.ioc_put("sim:Burst", count)
    await asyncio.to_thread(lambda: _wait_scan_done(rig, done_before + count - 1, 60.0 + count * 5.0))
    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = rig.jobs_after(last_id)
        if len(rows) >= count and all(r["status"] in FINAL for r in rows):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # the bridge journals the job id just after the server's answer
    rows = rig.jobs_after(last_id)
    jobs = [dict(job=r["id"], status=r["status"], message=r["message"], queued=r["created"], started=r["started"],
                 finished=r["finished"], key=r["dedup_key"] or rig.journal_key(r["id"])) for r in rows]
    return dict(count=count, gap_s=gap_s, t_go=t_go, edges=rig.journal_edges(t_go), jobs=jobs,
                timed_out=time.monotonic() >= deadline)


def burst_hops(burst: dict[str, Any]) -> dict[str, Any]:
    """Per complete scan of a burst: PV edge -> job queued / running, queued -> running (seconds), and the
    exactly-once counts: complete ends, jobs, scans queued twice, complete scans without a job."""
    complete = [e for e in burst["edges"] if e["outcome"] == "complete"]
    by_key: dict[str, list[dict[str, Any]]] = {}
    for job in burst["jobs"]:
        by_key.setdefault(job["key"], []).append(job)
    edge_to_queued, edge_to_started, queued_to_started = [], [], []
    for e in complete:
        jobs = by_key.get(e["dedup_key"], [])
        if not jobs or not e["ioc_timestamp"]:
            continue
        j = jobs[0]
        edge_to_queued.append(j["queued"] - e["ioc_timestamp"])
        if j["started"] is not None:
            edge_to_started.append(j["started"] - e["ioc_timestamp"])
            queued_to_started.append(j["started"] - j["queued"])
    return dict(
        edge_to_queued=edge_to_queued, edge_to_started=edge_to_started, queued_to_started=queued_to_started,
        scans=burst["count"], complete=len(complete), not_complete=len(burst["edges"]) - len(complete),
        jobs=len(burst["jobs"]), queued_twice=sorted(k for k, js in by_key.items() if len(js) > 1),
        complete_without_job=sorted(e["dedup_key"] or e["scan_number"] for e in complete
                                    if e["dedup_key"] not in by_key),
        jobs_not_done=sum(1 for j in burst["jobs"] if j["status"] != "done"))


def _wait_scan_done(rig: Rig, done_before: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while int(rig.ioc_get("sim:ScansDone")) <= done_before:
        if time.monotonic() > deadline:
            raise TimeoutError("the simulated scan did not finish")
        time.sleep(0.05)


def hops(scan: dict[str, Any]) -> dict[str, Any]:
    """Per-scan durations (seconds) from the raw time stamps; None where a stamp is missing."""

    def d(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    ev = scan["journal"]
    busy0, queued, started = scan["t_busy0"], scan["queued"], scan["started"]
    v0 = scan["viewer_logs"][0] if scan["viewer_logs"] else {"messages": []}
    first = next((m for m in v0["messages"] if m["n_images"] and m["iteration"] >= 1), None)
    first_recv = first["recv"] if first else None
    first_prod = first["t_produced"] if first else None
    worst_first = None
    for v in scan["viewer_logs"]:
        f = next((m for m in v["messages"] if m["n_images"] and m["iteration"] >= 1), None)
        if f is not None:
            worst_first = f["recv"] if worst_first is None else max(worst_first, f["recv"])
    connected = [v["connected_at"] for v in scan["viewer_logs"] if v["connected_at"]]
    all_in = max(connected) if connected else None
    frames: list[float] = []
    steady: list[float] = []  # frames produced once every viewer was connected (no handshakes in progress)
    for v in scan["viewer_logs"]:
        for m in v["messages"]:
            if not m["replay"] and m["status"] == "running" and m["t_produced"] is not None and m["n_images"]:
                frames.append(m["recv"] - m["t_produced"])
                if all_in is not None and m["t_produced"] >= all_in:
                    steady.append(m["recv"] - m["t_produced"])
    handshakes = [v["connected_at"] - v["connect_started"] for v in scan["viewer_logs"]
                  if v["connected_at"] and v.get("connect_started")]
    running = [m for m in v0["messages"] if m["status"] == "running" and m["n_images"] and not m["replay"]]
    intervals = [b["recv"] - a["recv"] for a, b in zip(running, running[1:], strict=False)]
    return dict(
        edge_to_classified=d(busy0, ev.get("complete")),
        edge_to_file_complete=d(busy0, ev.get("file_complete")),
        file_complete_to_queued=d(ev.get("file_complete"), queued),
        edge_to_queued=d(busy0, queued),
        edge_to_started=d(busy0, started),
        queued_to_started=d(queued, started),
        started_to_first_produced=d(started, first_prod),
        first_produced_to_recv=d(first_prod, first_recv),
        started_to_first_frame=d(started, first_recv),
        queued_to_first_frame=d(queued, first_recv),
        queued_to_first_frame_all_viewers=d(queued, worst_first),
        queued_to_viewers_connected=d(queued, all_in),
        frame_latencies=frames,
        frame_latencies_steady=steady,
        ws_handshakes=handshakes,
        frame_intervals=intervals,
        run_s=d(started, scan["finished"]),
    )
