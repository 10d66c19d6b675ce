"""Issue 17: why ePIE with 12 probe modes at 128^2 failed its graph capture. Launches ``epie_cols`` eagerly with
12 modes of 128^2 (48 KiB of dynamic shared memory) before and after ``columns.reserve_shared``, and prints the
kernel's static shared memory and the device's limits.

    python3 benchmarks/shared_memory_check.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import cupy as cp  # type: ignore[import-not-found]

    from reconstruction.gpu import columns
    from reconstruction.gpu import runtime as rt
    from reconstruction.gpu.runtime import f32, i32

    n, modes = 128, 12
    kern = rt.kernel("epie_cols")
    props = cp.cuda.runtime.getDeviceProperties(rt.device_id())
    print(f"SHARED epie_cols static {kern.shared_size_bytes} B, dynamic limit now {kern.max_dynamic_shared_size_bytes}"
          f" B; device per block {props['sharedMemPerBlock']} B, opt-in {props.get('sharedMemPerBlockOptin')} B; "
          f"{modes} modes at {n}^2 need {columns.shared_bytes(n, modes)} B dynamic", flush=True)
    far = cp.asarray(np.ones((modes, n, n), np.complex64))
    amp = cp.ones((1, n, n), cp.float32)
    order = cp.zeros(1, cp.int32)
    errp = cp.zeros(2 * n, cp.float64)
    slots = cp.zeros(4, cp.uint32)
    blocks, threads, shared = columns.launch_shape(n, modes)
    args = (far, amp, cp.zeros(1, cp.uint8), i32(0), i32(0), order, i32(0), i32(n), i32(modes), f32(1.0 / n),
            f32(1.0 / n / n), errp, slots, i32(-1), i32(-1), columns.twiddles(n), i32(1))
    for label in ("without opt-in", "after reserve_shared"):
        if label != "without opt-in":
            columns.reserve_shared(n, modes)
        try:
            kern((blocks,), (threads,), args, shared_mem=shared)
            cp.cuda.Device().synchronize()
            print(f"SHARED launch {label}: ok (dynamic limit {kern.max_dynamic_shared_size_bytes} B)", flush=True)
        except Exception as exc:  # the failure being demonstrated
            print(f"SHARED launch {label}: {type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__":
    main()
