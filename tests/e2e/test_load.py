"""Load: 20 concurrent websocket viewers on one running job while 10 more jobs wait in the queue.

Every viewer must end with the job's final frame, no job may be lost, and the web must stay responsive
while it streams; p50/p95 latencies are printed and written to test-output/load.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from typing import Any

import pytest

from tests.support.frames import FINAL_STATUSES, Frame, open_viewer, parse_frame
from tests.support.processes import TEST_OUTPUT
from tests.support.stack import ProductionStack, User, small_sim_cmdstr
from tests.support.web import ApiClient, WebClient

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(300)]

VIEWERS = 20
QUEUED = 10


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 50) * 1000, 1),
            "p95_ms": round(pct(values, 95) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1) if values else float("nan"),
            "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else float("nan")}


async def viewer(stack: ProductionStack, job_id: int, cookie: str, timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    frames: list[Frame] = []
    async with await open_viewer(stack.base_url, job_id, cookie, stack.origin, timeout=30) as ws:
        connected = time.perf_counter() - t0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout=deadline - time.monotonic())
            except TimeoutError:
                break
            if isinstance(msg, bytes):
                frames.append(parse_frame(msg))
                if frames[-1].status in FINAL_STATUSES:
                    break
    first = frames[0].received_at - t0 if frames else float("nan")
    gaps = [b.received_at - a.received_at for a, b in zip(frames, frames[1:], strict=False)]
    return {"connect_s": connected, "first_frame_s": first, "frames": frames, "gaps": gaps}


class Poller(threading.Thread):
    """Keeps asking the web for pages while the load runs; records each request's latency."""

    def __init__(self, stack: ProductionStack, web: WebClient, api: ApiClient) -> None:
        super().__init__(daemon=True)
        self.stack, self.web, self.api = stack, web, api
        self.latencies: dict[str, list[float]] = {"healthz": [], "history": [], "api_list": []}
        self.errors: list[str] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        anon = WebClient(self.stack.base_url, timeout=10)
        while not self.stop_flag.is_set():
            for name, call in (("healthz", lambda: anon.get("/healthz")),
                               ("history", lambda: self.web.get("/")),
                               ("api_list", lambda: self.api.get("/api/v1/jobs/"))):
                try:
                    resp = call()
                except Exception as exc:  # a timeout is a finding, not a crash of the poller
                    self.errors.append(f"{name}: {exc!r}")
                    continue
                if resp.status != 200:
                    self.errors.append(f"{name}: HTTP {resp.status}")
                self.latencies[name].append(resp.seconds)
            self.stop_flag.wait(0.25)


def test_twenty_viewers_and_ten_queued_jobs(prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    web = WebClient(prod_stack.base_url)
    web.login(alice.username, alice.password)
    prod_stack.start_worker(0)
    prod_stack.start_worker(1)  # two workers, as on a two-GPU host
    t_start = time.monotonic()
    main_iters = 300
    main_id = int(api.submit(small_sim_cmdstr(main_iters), label="load-main")["id"])
    queued_ids = [int(api.submit(small_sim_cmdstr(10), label=f"load-q{i}")["id"]) for i in range(QUEUED)]
    submit_s = time.monotonic() - t_start

    poller = Poller(prod_stack, web, api)
    poller.start()
    try:
        async def watch_all() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(viewer(prod_stack, main_id, web.cookie_header(), 180)
                                                for _ in range(VIEWERS))))

        results = asyncio.run(watch_all())
        final_jobs = {jid: api.wait_status(jid, FINAL_STATUSES, timeout=180)
                      for jid in [main_id, *queued_ids]}
    finally:
        poller.stop_flag.set()
        poller.join(timeout=15)
        prod_stack.workers[1].stop()  # the stack's other tests expect one worker
    elapsed = time.monotonic() - t_start

    finals = [r["frames"][-1] if r["frames"] else None for r in results]
    max_seq = max(f.seq for f in finals if f is not None) if any(finals) else -1
    report = {
        "viewers": VIEWERS,
        "queued_jobs": QUEUED,
        "main_job_iterations": main_iters,
        "elapsed_s": round(elapsed, 2),
        "submit_11_jobs_s": round(submit_s, 3),
        "ws_connect": summary([r["connect_s"] for r in results]),
        "ws_first_frame": summary([r["first_frame_s"] for r in results if r["frames"]]),
        "ws_frame_gap": summary([g for r in results for g in r["gaps"]]),
        "frames_per_viewer": [len(r["frames"]) for r in results],
        "http": {name: summary(vals) for name, vals in poller.latencies.items()},
        "http_errors": poller.errors[:20],
        "job_statuses": {str(k): v["status"] for k, v in final_jobs.items()},
    }
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    (TEST_OUTPUT / "load.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "frames_per_viewer"}, indent=2))

    for i, f in enumerate(finals):
        assert f is not None, f"viewer {i} got no frame"
        assert f.status == "done", f"viewer {i} ended on {f.status} at iteration {f.iteration}"
        assert f.iteration == main_iters and f.seq == max_seq, (
            f"viewer {i} missed the final frame: {f.header}")
    rate_hz = float(prod_stack.env.get("PTYCHOPY_FRAME_RATE_HZ", "5"))
    gaps = [g for r in results for g in r["gaps"][1:-1]]  # the stored frame on connect and the final one excepted
    # the worker sends at most rate_hz frames a second; delivery under load may bunch them, so the bound is half
    # the period (unthrottled, 300 iterations would arrive ~16 ms apart)
    assert gaps and pct(gaps, 50) >= 0.5 / rate_hz, (
        f"frames come faster than PTYCHOPY_FRAME_RATE_HZ={rate_hz:g}: median gap {pct(gaps, 50) * 1000:.0f} ms")
    lost = {k: v["status"] for k, v in final_jobs.items() if v["status"] != "done"}
    assert not lost, f"jobs not done: {lost}"
    assert not poller.errors, f"the web failed requests under load: {poller.errors[:5]}"
    connects = [r["connect_s"] for r in results]
    assert pct(connects, 95) < 5.0, f"websocket connects p95 {pct(connects, 95):.2f} s under load"
    for name, vals in poller.latencies.items():
        assert vals, f"no {name} request completed during the load"
        assert pct(vals, 95) < 2.0, f"{name} p95 {pct(vals, 95):.2f} s: the web is not responsive under load"
