"""The launch schedules of the fast LSQML's sub-pixel path (gpu/lsqml_fits.py), recorded on the CPU with stand-ins
for CuPy: which kernel and transform runs on which stream, ordered by which events, touching which buffers. The
numbers are test_lsqml_fits_arithmetic_cpu.py's job and tests/gpu's; this checks what no CPU run of the
arithmetic can: that the fused schedule's second stream (the probe's update chain) shares no buffer with the main
stream's work between a fork and its join (a data race on the GPU), and that the first schedule still runs its
launches in their old order on one stream.

What a kernel may write is read from its signature in kernels/*.cu: a pointer parameter not declared const.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from reconstruction.gpu import lsqml_fits
from reconstruction.gpu.runtime import kernel_source

N_PX, N_POS, BATCH, OBJ_PX = 8, 10, 3, 20

# a refining epoch's first launches: the summed probe intensity of every window (in a fixed point: its scale, the sums,
# the map), which lf_gather weighs its steps by
EPOCH_START = ["lf_probe_intensity_max", "lf_illumination", "lf_illumination_map"]
# the first schedule's launches a mini-batch (sub-pixel windows, refinement, flux fit, probe updated), as before
FIRST_BATCH = ["copy_c64", "fft", "lf_shift", "fft", "lf_gather", "fft", "lf_modulus", "fft", "lf_scatter",
               "lf_probe_reduce", "fft", "lf_gp_sum", "fft", "lf_dots", "lf_gp_sum", "fft", "lf_probe_add",
               "lf_obj_update", "lf_move"]


def writable_args() -> dict[str, list[bool]]:
    """{kernel: [whether parameter i is a pointer the kernel may write]} from kernels/*.cu."""
    out = {}
    for name, params in re.findall(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", kernel_source()):
        out[name] = [("*" in p and not p.strip().startswith("const")) for p in params.split(",")]
    return out


def root(a):
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


class Recorder:
    """Streams with vector clocks: an op on stream s happens before an op on t when t's clock has seen it."""

    def __init__(self):
        self.ops = []
        self.main = FakeStream(self)
        self.current = [self.main]
        self.writable = writable_args()

    def op(self, name, reads, writes):
        s = self.current[-1]
        s.clock[s] = s.clock.get(s, 0) + 1
        self.ops.append(SimpleNamespace(name=name, stream=s, clock=dict(s.clock), reads={id(root(a)) for a in reads},
                                        writes={id(root(a)) for a in writes}))

    def launch(self, name, args):
        flags = self.writable[name]
        assert len(flags) == len(args), f"{name}: {len(args)} arguments for {len(flags)} parameters"
        arrays = [(a, w) for a, w in zip(args, flags, strict=True) if isinstance(a, np.ndarray)]
        self.op(name, [a for a, _ in arrays], [a for a, w in arrays if w])

    def before(self, a, b):
        return a.clock[a.stream] <= b.clock.get(a.stream, 0)

    def races(self):
        """(op, op) pairs on different streams, ordered by no event, where one writes a buffer the other touches."""
        found = []
        for i, a in enumerate(self.ops):
            for b in self.ops[i + 1:]:
                if a.stream is b.stream or self.before(a, b) or self.before(b, a):
                    continue
                if a.writes & (b.reads | b.writes) or b.writes & a.reads:
                    found.append((a.name, b.name))
        return found


class FakeStream:
    def __init__(self, rec, non_blocking=False):
        self.rec, self.clock = rec, {}

    def record(self, event=None):
        event = event or FakeEvent()
        event.clock = dict(self.clock)
        return event

    def wait_event(self, event):
        for s, t in event.clock.items():
            self.clock[s] = max(self.clock.get(s, 0), t)

    def __enter__(self):
        self.rec.current.append(self)
        return self

    def __exit__(self, *exc):
        self.rec.current.pop()

    __hash__ = object.__hash__


class FakeEvent:
    def __init__(self, disable_timing=False):
        self.clock = {}


class FakePlans:
    def __init__(self, rec):
        self.rec = rec

    def get(self, batch, n):
        return SimpleNamespace(fft=lambda src, dst, direction: self.rec.op("fft", [src], [dst]))

    def forward(self, buf, batch, n):
        self.rec.op("fft", [buf], [buf])

    inverse = forward

    def forward_into(self, src, dst, batch, n):
        self.rec.op("fft", [src], [dst])


@pytest.fixture
def recorded(monkeypatch):
    """run(fused, update_probe) -> the Recorder of one epoch of _launch_fits (refinement and the flux fit on)."""

    def run(fused: bool, update_probe: bool = True):
        monkeypatch.setenv("PTYCHOPY_BENCH_LSQML_FITS_FUSED", "1" if fused else "0")
        rec = Recorder()
        cuda = SimpleNamespace(Stream=lambda non_blocking=False: FakeStream(rec, non_blocking), Event=FakeEvent,
                               get_current_stream=lambda: rec.current[-1])
        cp = SimpleNamespace(zeros=np.zeros, empty=np.empty, ascontiguousarray=np.ascontiguousarray,
                             complex64=np.complex64, float32=np.float32, float64=np.float64, uint64=np.uint64,
                             cuda=cuda)
        monkeypatch.setattr(lsqml_fits, "rt", SimpleNamespace(
            BLOCK=256,
            launch=lambda name, work, args, grid_y=1, block=256: rec.launch(name, args),
            launch_jp=lambda name, positions, n2, args, block=256: rec.launch(name, args),
            kernel=lambda name: (lambda grid, block, args: rec.launch(name, args))))
        eng = engine(cp, rec, update_probe)
        eng._launch_fits(1, update_probe, True)
        rec.end = SimpleNamespace(stream=rec.main, clock=dict(rec.main.clock))
        return rec, eng

    return run


def engine(cp, rec, update_probe):
    """An LSQMLFitsMixin with the buffers FastLSQML gives it, N_POS fractional positions in batches of BATCH."""
    rng = np.random.default_rng(0)
    n2, b = N_PX * N_PX, BATCH
    positions = rng.uniform(1, OBJ_PX - N_PX - 1, (N_POS, 2))
    corners = np.floor(positions + 0.5).astype(np.int64)
    st = SimpleNamespace(obj=np.ones((OBJ_PX, OBJ_PX), np.complex64), probe=np.ones((1, N_PX, N_PX), np.complex64),
                         positions_px=positions, intensity_scale=np.ones(N_POS, np.float32), n_positions=N_POS,
                         amplitudes=np.ones((N_POS, n2), np.float32), rows=corners[:, 0].copy(),
                         cols=corners[:, 1].copy())
    eng = lsqml_fits.LSQMLFitsMixin()
    eng.cp, eng.state, eng.n, eng.n2, eng.width, eng.mt, eng.batch_size = cp, st, N_PX, n2, OBJ_PX, 1, b
    eng.settings = SimpleNamespace(noise_model="gaussian", beta_lsq=0.9, delta_p=0.1, position_refinement_from=2)
    eng.beta = 0.9  # the step damping in force (LSQML.__init__'s, from beta_lsq)
    eng.chi = np.zeros(3 * b * n2, np.complex64)
    eng.num_o, eng.den_o = np.zeros(OBJ_PX * OBJ_PX, np.complex64), np.zeros(OBJ_PX * OBJ_PX, np.float32)
    eng.gp, eng.dp, eng.new_probe = np.zeros(n2, np.complex64), np.zeros(n2, np.float32), np.zeros(n2, np.complex64)
    eng.err, eng.slots, eng.mask = np.zeros(2), np.zeros(4, np.uint32), (np.zeros(1, np.uint8), 0, 0)
    eng.rows32, eng.cols32 = st.rows.astype(np.int32), st.cols.astype(np.int32)
    eng.order, eng.stream, eng.plans = np.arange(N_POS, dtype=np.int32), None, FakePlans(rec)
    eng.refiner = SimpleNamespace(start_px=positions.copy(), weigh_steps=True)
    eng._setup_fits(True)
    return eng


def test_the_fused_schedule_shares_no_buffer_between_its_streams_while_forked(recorded):
    rec, eng = recorded(fused=True)
    side = [op.name for op in rec.ops if op.stream is not rec.main]
    assert eng._fused and {"lf_gp_sum_tab", "lf_probe_add", "fft"} <= set(side)  # the probe chain did fork
    assert side.count("lf_probe_add") == -(-N_POS // BATCH)
    assert rec.races() == []
    assert all(rec.before(op, rec.end) for op in rec.ops)  # every fork joined before the epoch ends


def test_a_probe_chain_that_read_the_positions_would_race_with_the_move(recorded, monkeypatch):
    """The checker itself: the first schedule's moved-back sum (ramps from the positions) on the second stream
    races with lf_move, which writes them."""
    first_step = lsqml_fits.LSQMLFitsMixin._probe_step

    def from_positions(self, *args):
        self._fused = False
        first_step(self, *args)
        self._fused = True

    monkeypatch.setattr(lsqml_fits.LSQMLFitsMixin, "_probe_step", from_positions)
    rec, _ = recorded(fused=True)
    assert ("lf_gp_sum", "lf_move") in rec.races() or ("lf_move", "lf_gp_sum") in rec.races()


@pytest.mark.parametrize("update_probe", [True, False])
def test_the_first_schedule_runs_its_old_launches_on_one_stream(recorded, update_probe):
    rec, eng = recorded(fused=False, update_probe=update_probe)
    assert not eng._fused and all(op.stream is rec.main for op in rec.ops)
    names = [op.name for op in rec.ops]
    batches = -(-N_POS // BATCH)
    assert names[: len(EPOCH_START)] == EPOCH_START
    names = names[len(EPOCH_START):]
    if update_probe:
        assert names[: len(FIRST_BATCH)] == FIRST_BATCH
        copies = batches + batches % 2  # one before each probe transform, and the copy back after an odd count
        assert names.count("lf_gp_sum") == 2 * batches and names.count("copy_c64") == copies
    else:
        assert "lf_gp_sum" not in names and names.count("ls_den_max") == batches
    assert names[-1] == "lf_epoch_end"
