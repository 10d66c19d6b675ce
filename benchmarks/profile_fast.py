"""Where the time of a fast GPU iteration goes: every kernel and cuFFT call bracketed by CUDA events.

    python3 benchmarks/profile_fast.py --size 256 --scan 30
    python3 benchmarks/profile_fast.py --algs DM,ePIE --options position_refinement_from=2 \
        --methods _end_refining_epoch,_step_terms,_moved_probes,_follow_positions,refiner.end_epoch

Runs each fast engine eagerly (graphs off, so each launch can be bracketed), sums device time per kernel
name over a few iterations, and prints ms per iteration per kernel beside the graph-replay time per iteration.
Event brackets serialise the launches, so the per-kernel sums are upper bounds of the kernels' own times.
``--options`` sets EngineSettings fields (e.g. ``subpixel_windows=1``); ``--methods`` times engine methods (or the
refiner's, ``refiner.end_epoch``) by host clock between device synchronisations, inclusive of what they call: the
place of the time the kernels' sum does not explain (CuPy array work, host round trips).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--scan", type=int, default=30)
    p.add_argument("--algs", default="DM,LSQML,ePIE")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--options", default="", help="EngineSettings fields, name=value,...")
    p.add_argument("--methods", default="", help="engine methods timed by host clock, comma-separated")
    args = p.parse_args()
    options = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.options.split(",") if kv)}

    import cupy as cp  # type: ignore[import-not-found]
    import engines as bench  # benchmarks/engines.py

    from reconstruction.driver import Reconstruction
    from reconstruction.engines import EngineSettings
    from reconstruction.gpu import runtime as rt

    d = bench.load_scan(bench.make_scan(Path("/tmp/ptychopy_bench"), args.size, args.scan))
    pending: list[tuple[str, Any, Any]] = []

    depth = [0]

    def bracket(name: str, fn: Any) -> None:
        if depth[0]:  # rt.launch goes through rt.kernel: time the outer call only
            fn()
            return
        s, e = cp.cuda.Event(), cp.cuda.Event()
        depth[0] += 1
        try:
            s.record()
            fn()
            e.record()
        finally:
            depth[0] -= 1
        pending.append((name, s, e))

    orig_launch, orig_jp, orig_fwd, orig_inv = rt.launch, rt.launch_jp, rt.FFTPlans.forward, rt.FFTPlans.inverse
    orig_kernel, orig_fwd_rows, orig_inv_rows = rt.kernel, rt.FFTPlans.forward_rows, rt.FFTPlans.inverse_rows

    def kernel(name: str) -> Any:  # kernels launched directly (their own grids) are bracketed per call too
        fn = orig_kernel(name)
        return lambda *a, **kw: bracket(name, lambda: fn(*a, **kw))

    def fwd_rows(self: Any, buf: Any, rows: int, n: int) -> None:
        bracket("cufft forward rows", lambda: orig_fwd_rows(self, buf, rows, n))

    def inv_rows(self: Any, buf: Any, rows: int, n: int) -> None:
        bracket("cufft inverse rows", lambda: orig_inv_rows(self, buf, rows, n))

    def launch(name: str, work: int, a: tuple[Any, ...], grid_y: int = 1, block: int = rt.BLOCK) -> None:
        bracket(name, lambda: orig_launch(name, work, a, grid_y, block))

    def launch_jp(name: str, positions: int, n2: int, a: tuple[Any, ...], block: int = rt.BLOCK) -> None:
        bracket(name, lambda: orig_jp(name, positions, n2, a, block))

    def fwd(self: Any, buf: Any, batch: int, n: int) -> None:
        bracket(f"cufft forward (batch {batch})", lambda: orig_fwd(self, buf, batch, n))

    def inv(self: Any, buf: Any, batch: int, n: int) -> None:
        bracket(f"cufft inverse (batch {batch})", lambda: orig_inv(self, buf, batch, n))

    settings = EngineSettings(update_probe_from=1, phase_constraint=0, **options)
    method_s: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            cp.cuda.Device().synchronize()
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                cp.cuda.Device().synchronize()
                method_s[name] += time.perf_counter() - t0
        return wrapper
    for alg in args.algs.split(","):
        n = args.size
        os.environ["PTYCHOPY_BENCH_GPU_GRAPHS"] = "1"
        rec = Reconstruction(d["intensities"], d["positions"], algorithm=alg, iterations=100, device="gpu", seed=0,
                             probe=d["probe0"], beam_diameter_px=0.4 * n, settings=settings)
        for _ in range(3):
            rec.step()
        graph_ms = []
        for _ in range(5):
            t0 = time.perf_counter()
            rec.step()
            graph_ms.append(1e3 * (time.perf_counter() - t0))
        os.environ["PTYCHOPY_BENCH_GPU_GRAPHS"] = "0"
        rec.step()
        rt.launch, rt.launch_jp, rt.kernel = launch, launch_jp, kernel  # type: ignore[assignment]
        rt.FFTPlans.forward, rt.FFTPlans.inverse = fwd, inv  # type: ignore[method-assign]
        rt.FFTPlans.forward_rows, rt.FFTPlans.inverse_rows = fwd_rows, inv_rows  # type: ignore[method-assign]
        pending.clear()
        method_s.clear()
        for name in [m for m in args.methods.split(",") if m]:
            owner_name, _, attr = name.rpartition(".")
            owner = getattr(rec.engine, owner_name) if owner_name else rec.engine
            if owner is not None and hasattr(owner, attr):
                setattr(owner, attr, timed(name, getattr(owner, attr)))
        eager_s = []
        try:
            for _ in range(args.iterations):
                cp.cuda.Device().synchronize()
                t0 = time.perf_counter()
                rec.step()
                cp.cuda.Device().synchronize()
                eager_s.append(time.perf_counter() - t0)
        finally:
            rt.launch, rt.launch_jp, rt.kernel = orig_launch, orig_jp, orig_kernel
            rt.FFTPlans.forward, rt.FFTPlans.inverse = orig_fwd, orig_inv  # type: ignore[method-assign]
            rt.FFTPlans.forward_rows, rt.FFTPlans.inverse_rows = orig_fwd_rows, orig_inv_rows  # type: ignore
        cp.cuda.Device().synchronize()
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for name, s, e in pending:
            key = name if "rows" in name else "cufft forward" if name.startswith("cufft forward") else (
                "cufft inverse" if name.startswith("cufft inverse") else name)
            sums[key] += cp.cuda.get_elapsed_time(s, e)
            counts[key] += 1
        total = sum(sums.values()) / args.iterations
        print(f"PROFILE {alg} n={n} N={d['intensities'].shape[0]} {args.options or 'plain'}: graph replay "
              f"{sorted(graph_ms)[len(graph_ms) // 2]:.2f} ms/it; eager {1e3 * sum(eager_s) / len(eager_s):.2f} "
              f"ms/it; bracketed kernels sum {total:.2f} ms/it ({type(rec.engine).__name__})")
        for name, v in method_s.items():
            print(f"PROFILE   method {name:28s} {1e3 * v / args.iterations:8.3f} ms/it (host clock, inclusive)")
        for key, v in sorted(sums.items(), key=lambda kv: -kv[1]):
            print(f"PROFILE   {key:28s} {v / args.iterations:8.3f} ms/it  {counts[key] // args.iterations:6d} calls/it")
        os.environ["PTYCHOPY_BENCH_GPU_GRAPHS"] = "1"
        rec.close()
        if alg == "ePIE" and not options:  # the unfused step sequence (seven launches a position) for comparison
            os.environ["PTYCHOPY_BENCH_EPIE_FUSED"] = "0"
            rec = Reconstruction(d["intensities"], d["positions"], algorithm=alg, iterations=100, device="gpu",
                                 seed=0, probe=d["probe0"], beam_diameter_px=0.4 * n, settings=settings)
            for _ in range(3):
                rec.step()
            unfused = []
            for _ in range(5):
                t0 = time.perf_counter()
                rec.step()
                unfused.append(1e3 * (time.perf_counter() - t0))
            os.environ.pop("PTYCHOPY_BENCH_EPIE_FUSED")
            print(f"PROFILE ePIE unfused (update and gather as two launches): graph replay "
                  f"{sorted(unfused)[len(unfused) // 2]:.2f} ms/it")
            rec.close()


def _value(text: str) -> Any:
    """An EngineSettings value from the command line: int, float, or the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    main()
