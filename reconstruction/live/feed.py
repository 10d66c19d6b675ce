"""``LiveFeed``: a thread that polls a live source into a bounded host buffer the streaming run drains.

It checks every frame as it arrives: an index outside the plan or a changed frame shape stops the feed with a
:class:`LiveSourceError` naming the frame index and the source; a frame index seen before is dropped and
counted (``duplicates``; the first frame of that index is the one used); frames out of order are kept (the run
puts them at their scan point). A buffer holding ``max_frames`` frames the run has not taken yet stops the feed
with an error (no frame is ever dropped silently). No new frame for ``stall_s`` while the writer still says it is
acquiring ends the stream as STALLED; a source with a ``holding_back()`` method saying True (frames arrived that it
holds back for now: a pvAccess source fetching the frames before its own from the bridge) is not stalled meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from .source import ABORTED, ACQUIRING, CANCELLED, ENDED, STALLED, FrameBatch, LiveSource, LiveSourceError


class LiveFeed:
    """Polls ``source`` every ``poll_s`` on a daemon thread. ``outcome`` is None while the scan runs, then
    ENDED, ABORTED, STALLED, CANCELLED or STOPPED; :meth:`take` returns the buffered batches and raises the feed's
    error, if any."""

    def __init__(self, source: LiveSource, *, stall_s: float, max_frames: int, poll_s: float = 0.01):
        self.source = source
        self.stall_s = float(stall_s)
        self.max_frames = int(max_frames)
        self.poll_s = float(poll_s)
        self.received = 0
        self.duplicates: list[int] = []
        self.last_frame_monotonic: float | None = None
        self.outcome: str | None = None
        self._seen = np.zeros(source.planned.n_positions, dtype=bool)
        self._frame_shape = source.planned.frame_shape
        self._buffer: deque[FrameBatch] = deque()
        self._buffered = 0
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)

    def start(self) -> LiveFeed:
        self._thread.start()
        return self

    def cancel(self, outcome: str = CANCELLED) -> None:
        """End the stream now as ``outcome`` (CANCELLED: a user's cancel; STOPPED: the process running it stops):
        the frames already buffered are still taken."""
        if self.outcome is None:
            self.outcome = outcome
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def finished(self) -> bool:
        """True once the stream ended (any outcome) or failed."""
        return self.outcome is not None or self._error is not None

    def take(self) -> list[FrameBatch]:
        """Every buffered batch, oldest first (the buffer is emptied); raises the error that stopped the feed once
        the batches before it were taken."""
        with self._lock:
            out = list(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            if not out and self._error is not None:
                raise self._error
        return out

    def wait(self, timeout_s: float) -> None:
        """Sleep until something is buffered, the stream finished, or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._buffered and not self.finished:
            time.sleep(self.poll_s)

    # -- the thread -----------------------------------------------------------------------------------------------
    def _run(self) -> None:
        started = time.monotonic()
        # a source may hold back frames that arrived (PvaSource: its own, while the frames before them come from the
        # bridge's buffer): not a stall while it says so
        holding_back = getattr(self.source, "holding_back", None)
        held_at = started
        try:
            while not self._stop.is_set():
                said = self.source.state()  # before the poll: 'ended' then means every row is readable
                batch = self.source.poll()
                now = time.monotonic()
                if batch is not None and len(batch):
                    self._accept(batch, now)
                    continue
                if said in (ENDED, ABORTED):
                    self.outcome = self.outcome or said
                    return
                assert said == ACQUIRING
                if holding_back is not None and holding_back():
                    held_at = now
                if now - max(self.last_frame_monotonic or started, held_at) > self.stall_s:
                    self.outcome = self.outcome or STALLED
                    return
                time.sleep(self.poll_s)
        except Exception as exc:  # reported to the run through take()
            with self._lock:
                self._error = exc

    def _accept(self, batch: FrameBatch, now: float) -> None:
        name = self.source.name
        frames = batch.frames
        if self._frame_shape is None:
            self._frame_shape = (int(frames.shape[1]), int(frames.shape[2]))
        if tuple(frames.shape[1:]) != tuple(self._frame_shape):
            raise LiveSourceError(f"{name}, frame {int(batch.indices[0])}: {frames.shape[1]}x{frames.shape[2]} px; "
                                  f"earlier frames are {self._frame_shape[0]}x{self._frame_shape[1]} px")
        n_planned = self._seen.shape[0]
        keep = np.ones(len(batch), dtype=bool)
        for j, index in enumerate(batch.indices.tolist()):
            if not 0 <= index < n_planned:
                raise LiveSourceError(f"{name}, frame index {index}: outside the planned scan of {n_planned} "
                                      f"points (0..{n_planned - 1})")
            if self._seen[index]:
                keep[j] = False
                self.duplicates.append(int(index))
            self._seen[index] = True
        if not keep.all():
            batch = FrameBatch(frames[keep], batch.indices[keep],
                               None if batch.positions_m is None else batch.positions_m[keep])
        with self._lock:
            if self._buffered + len(batch) > self.max_frames:
                raise LiveSourceError(
                    f"{name}, frame {int(batch.indices[0]) if len(batch) else -1}: the host buffer of "
                    f"{self.max_frames} frames (-liveBuffer) is full; the reconstruction fell behind the detector")
            self._buffer.append(batch)
            self._buffered += len(batch)
        self.received += len(batch)
        self.last_frame_monotonic = now
