"""A dataset larger than the GPU memory a run may use, streamed from pinned host memory (issue 10).

    python3 benchmarks/streaming.py --positions 250000 --size 256 --cap-gib 24 --algs ePIE,LSQML --epochs 2

Simulates N x n^2 float32 intensities on the GPU straight into one host array (no second host copy: 250,000 x 256^2
is 65.5 GB), then for each algorithm:

- a **streamed** run under the cap (``memory_cap_bytes``; CuPy's pool is also limited to the cap, so an
  allocation past it would fail): ms per epoch, device memory the run holds (pool, and memGetInfo including CUDA
  graphs), the copy path's own host-to-device rate (every chunk of one epoch filled on the copy stream alone,
  timed with CUDA events) and the rate the run drew (bytes streamed per epoch / epoch time);
- a **resident** run without a cap, at N when the plan says it fits on the device, else at the largest multiple
  of 10,000 positions that does (the first N' patterns of the same array): ms per epoch and per position;
- the slow-down: streamed over resident ms per position.

The probe guess is built from the first 10,000 patterns (the full-data mean would be one more pass over 65 GB).
Prints one ``STREAM`` line per run and a table last; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GIB = 2**30


def _run(cp, inten, positions, alg, args, probe, cap_bytes):
    from reconstruction.driver import Reconstruction
    from reconstruction.engines import EngineSettings

    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    pool.set_limit(size=cap_bytes)
    free0, total = cp.cuda.runtime.memGetInfo()
    t0 = time.perf_counter()
    rec = Reconstruction(inten, positions, algorithm=alg, iterations=args.epochs, device="gpu", seed=0, probe=probe,
                         memory_cap_bytes=cap_bytes, settings=EngineSettings(update_probe_from=1, phase_constraint=0))
    setup_s = time.perf_counter() - t0
    for _ in rec:
        pass
    free1, _ = cp.cuda.runtime.memGetInfo()
    n_pos, n = inten.shape[0], inten.shape[-1]
    ms = [1e3 * t for t in rec.iteration_s]
    steady = statistics.median(ms[1:]) if len(ms) > 1 else ms[0]
    out = dict(
        algorithm=alg, positions=n_pos, size=n, mode=rec.memory_plan.mode, cap_gib=cap_bytes / GIB,
        chunk=rec.memory_plan.chunk_positions, object_shape=list(rec.state.obj.shape), setup_s=setup_s,
        epoch_ms=ms, steady_ms=steady, us_per_position=1e3 * steady / n_pos,
        pool_gib=pool.total_bytes() / GIB, device_used_gib=(free0 - free1) / GIB,
        plan_needed_gib=rec.needed_bytes / GIB, errors=list(rec.errors),
        data_gb=inten.nbytes / 1e9,
    )
    if rec.streamed:
        sm = rec.state.amplitudes
        fill_s = sm.measure_fill_s(rec.engine.order, repeats=2)
        out.update(copy_only_gbps=inten.nbytes / fill_s / 1e9, copy_only_ms=1e3 * fill_s,
                   drawn_gbps=inten.nbytes / (steady / 1e3) / 1e9)
    rec.close()
    pool.set_limit(size=0)
    print("STREAM " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}),
          flush=True)
    return out


def _largest_resident(n_pos, n, positions, alg, free_bytes, step=10_000):
    from reconstruction.memory_plan import plan_memory
    from reconstruction.positions import object_shape_for

    m = n_pos
    while m > 0:
        shape = object_shape_for(positions[:m], n)
        if plan_memory(m, n, shape, algorithm=alg, fast_gpu=True, free_bytes=free_bytes).mode == "resident":
            return m
        m = (m - 1) // step * step
    return 0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--positions", type=int, default=250_000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--cap-gib", type=float, default=24.0)
    p.add_argument("--algs", default="ePIE,LSQML")
    p.add_argument("--resident", default="ePIE,LSQML", help="algorithms to also run resident ('' = none)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--json", default="")
    p.add_argument("--fill-blocks", default="", help="comma list: streamed runs with each stream_fill grid size "
                                                     "(default: the module's FILL_BLOCKS)")
    args = p.parse_args()

    import cupy as cp  # type: ignore[import-not-found]
    from large_scan import simulate_on_gpu

    from reconstruction.probes import probe_guess_from_data

    t0 = time.perf_counter()
    inten, positions = simulate_on_gpu(args.positions, args.size)
    print(f"STREAM simulated {inten.shape} ({inten.nbytes / 1e9:.1f} GB) in {time.perf_counter() - t0:.1f} s",
          flush=True)
    probe = probe_guess_from_data(inten[:10_000], 0.4 * args.size)
    cap = int(args.cap_gib * GIB)
    rows = []
    from reconstruction.gpu import streaming

    for alg in [a for a in args.algs.split(",") if a]:
        for blocks in [int(b) for b in args.fill_blocks.split(",") if b] or [streaming.FILL_BLOCKS]:
            streaming.FILL_BLOCKS = blocks
            rows.append(_run(cp, inten, positions, alg, args, probe, cap))
            rows[-1]["fill_blocks"] = blocks
    for alg in [a for a in args.resident.split(",") if a]:
        cp.get_default_memory_pool().free_all_blocks()
        free = int(cp.cuda.runtime.memGetInfo()[0])
        m = _largest_resident(args.positions, args.size, positions, alg, free)
        if m == 0:
            print(f"STREAM {alg}: no resident size fits", flush=True)
            continue
        rows.append(_run(cp, inten[:m], positions[:m], alg, args, probe, 0))

    print("\n| algorithm | mode | N | cap GiB | chunk (fill blocks) | ms/epoch | us/position "
          "| device GiB (pool / memGetInfo) | copy-only GB/s | drawn GB/s | slow-down |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        res = [x for x in rows if x["algorithm"] == r["algorithm"] and x["mode"] == "resident"]
        slow = f"{r['us_per_position'] / res[0]['us_per_position']:.2f}x" if res and r["mode"] == "streamed" else ""
        chunk = f"{r['chunk']} ({r['fill_blocks']})" if r["chunk"] else "-"
        print(f"| {r['algorithm']} | {r['mode']} | {r['positions']:,} | {r['cap_gib'] or '-'} | {chunk} "
              f"| {r['steady_ms']:.0f} | {r['us_per_position']:.2f} | {r['pool_gib']:.2f} / "
              f"{r['device_used_gib']:.2f} | {r.get('copy_only_gbps', 0):.1f} | {r.get('drawn_gbps', 0):.1f} "
              f"| {slow} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
