"""``SlotUpload``: frames arriving in a live run -> amplitude slots of the run's (device) array, in batches.

The run preprocesses each arriving frame straight into a staging buffer allocated once (``capacity`` frames;
pinned host memory on the GPU): :meth:`SlotUpload.stage` hands out the next free frames of it,
:meth:`SlotUpload.commit` counts them in, and :meth:`SlotUpload.flush` moves everything staged to its slots: on
the GPU one asynchronous host-to-device copy on the run's stream and an in-place square root there, on the CPU
the square root written into the slots. No array the size of a frame is allocated per frame or per batch; on the
GPU the staging buffer is refilled only once its last copy has finished (a CUDA event).
"""

from __future__ import annotations

from typing import Any

import numpy as np

STAGING_BYTES = 256 * 2**20  # 1024 frames of 256^2 float32


class SlotUpload:
    """Stages frames for ``amplitudes[k:k+b]`` (an ``(N, n, n)`` float32 array of ``xp``) and writes
    sqrt(intensities) there at :meth:`flush`. ``filled``: slots written so far."""

    def __init__(self, amplitudes: Any, xp: Any, *, gpu: bool, staging_bytes: int | None = None):
        self.amplitudes = amplitudes
        self.xp = xp
        self.gpu = gpu
        self.filled = 0  # slots [0, filled) hold their amplitudes
        self.staged = 0  # frames in the staging buffer, for slots [filled, filled + staged)
        frame_bytes = int(np.prod(amplitudes.shape[1:])) * 4
        budget = STAGING_BYTES if staging_bytes is None else int(staging_bytes)
        self.capacity = max(1, min(int(amplitudes.shape[0]), budget // max(1, frame_bytes)))
        self.copies = 0  # flushes of a non-empty staging buffer (one host-to-device copy each on the GPU)
        self._staging: Any = None
        self._done: Any = None  # CUDA event: the last copy out of the staging buffer finished

    def stage(self, m: int) -> np.ndarray:
        """A view of the next ``m`` (<= ``capacity``) free staging frames, (m, n, n) float32, to fill and then
        :meth:`commit`; flushes first when fewer are free."""
        if not 0 < m <= self.capacity:
            raise ValueError(f"stage({m}): between 1 and {self.capacity} frames at a time")
        if self.staged + m > self.capacity:
            self.flush()
        if self._staging is None:
            shape = (self.capacity,) + tuple(self.amplitudes.shape[1:])
            if self.gpu:
                import cupyx  # type: ignore[import-not-found]

                self._staging = cupyx.empty_pinned(shape, dtype=np.float32)
            else:
                self._staging = np.empty(shape, dtype=np.float32)
        if self._done is not None and self.staged == 0:
            self._done.synchronize()  # the copy out of the staging buffer has finished before it is refilled
        return self._staging[self.staged:self.staged + m]

    def commit(self, m: int) -> None:
        """The ``m`` frames of the last :meth:`stage` are filled."""
        self.staged += m

    def flush(self) -> int:
        """Move the staged frames to their slots as amplitudes (one copy); returns ``filled``."""
        if not self.staged:
            return self.filled
        k, m = self.filled, self.staged
        dst = self.amplitudes[k:k + m]
        if self.gpu:
            cp = self.xp
            stream = cp.cuda.get_current_stream()
            dst.set(self._staging[:m], stream=stream)  # asynchronous: the staging buffer is pinned
            cp.sqrt(dst, out=dst)
            if self._done is None:
                self._done = cp.cuda.Event(block=False, disable_timing=True)
            self._done.record(stream)
        else:
            np.sqrt(self._staging[:m], out=dst)
        self.copies += 1
        self.filled, self.staged = k + m, 0
        return self.filled
