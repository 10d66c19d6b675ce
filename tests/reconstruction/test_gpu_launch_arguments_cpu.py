"""Every kernel launch of the fast ePIE, DM and LSQML passes the arguments its CUDA signature declares, in number,
scalar width and array element type: checked on the CPU by running the engines' Python with CuPy replaced by NumPy
and each launch by a check against ``kernels/*.cu`` (nothing is computed). CuPy passes whatever it is given: a 32-bit
scalar where the kernel reads 64 bits, or one argument too few, corrupts a GPU run silently, and device time is
scarce. Covers the plain steps, the flux fit and the Poisson model (gpu/flux_noise.py, gpu/lsqml_fits.py), alone and
with sub-pixel windows and position refinement (gpu/window_fits.py), and those without the fits; graphs off (the
same launches are captured); 32^2, and 64^2 for ePIE's column kernel (64^2-256^2)."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest

from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings, create_engine
from reconstruction.gpu import runtime as rt
from reconstruction.gpu.runtime import kernel_source
from reconstruction.simulate import simulate

N_SIZE = 32
SCALARS = {"long long": np.int64, "unsigned int": np.uint32, "int": np.int32, "float": np.float32,
           "double": np.float64}
# float* may take complex64: the atomics add to an interleaved (re, im) array as float pairs (lsqml.cu)
ELEMENTS = {"float2": (np.complex64,), "float4": (np.float32,), "float": (np.float32, np.complex64),
            "double": (np.float64,),
            "int": (np.int32,), "unsigned int": (np.uint32,), "unsigned char": (np.uint8, np.bool_),
            "long long": (np.int64,), "unsigned long long": (np.uint64,)}


def _signatures() -> dict[str, list[tuple[str, bool]]]:
    """{kernel: [(base type, is pointer), ...]} from the one translation unit."""
    out = {}
    for name, params in re.findall(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", kernel_source()):
        parsed = []
        for p in params.split(","):
            words = p.replace("*", " * ").replace("__restrict__", "").replace("const", "").split()
            pointer = "*" in words
            base = " ".join(w for w in words[:-1] if w != "*")
            parsed.append((base, pointer))
        out[name] = parsed
    return out


class DeviceArray(np.ndarray):
    """A NumPy array with CuPy's host transfer methods."""

    def set(self, host):  # noqa: A003 - CuPy's name
        self[...] = host

    def get(self):
        return np.asarray(self).copy()


class _Stream:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def record(self, event=None):
        return event or _Event()

    def wait_event(self, event):
        pass


class _Event:
    def __init__(self, **kw):
        pass


def _fake_cupy() -> types.SimpleNamespace:
    def dev(fn):
        return lambda *a, **k: np.asarray(fn(*a, **k)).view(DeviceArray)

    cuda = types.SimpleNamespace(Stream=lambda **kw: _Stream(), Event=_Event, get_current_stream=_Stream,
                                 Device=lambda *a: types.SimpleNamespace(id=0))
    names = ("complex64", "float32", "float64", "int32", "int64", "uint8", "uint32", "uint64")
    return types.SimpleNamespace(cuda=cuda, zeros=dev(np.zeros), ones=dev(np.ones), empty=dev(np.zeros),
                                 empty_like=dev(np.zeros_like), arange=dev(np.arange), stack=dev(np.stack),
                                 ascontiguousarray=dev(np.ascontiguousarray), asarray=dev(np.asarray),
                                 sqrt=np.sqrt, linalg=np.linalg, **{t: getattr(np, t) for t in names})


class _Plans:
    def get(self, *a, **k):
        return None

    def forward(self, buf, batch, n):
        assert buf.size >= batch * n * n, "a transform over more than its buffer"

    inverse = forward

    def forward_into(self, src, dst, batch, n):
        assert min(src.size, dst.size) >= batch * n * n, "a transform over more than its buffers"

    def forward_rows(self, buf, rows, n):
        assert buf.size >= rows * n, "a row transform over more than its buffer"

    inverse_rows = forward_rows


@pytest.fixture
def launches(monkeypatch):
    """Replace CuPy and the launches; yields the list of (kernel, problems) of every launch."""
    from reconstruction.gpu import dm, epie, lsqml

    signatures, seen = _signatures(), []

    def kernel(name):
        def call(grid, block, args, shared_mem=0):
            params = signatures[name]
            problems = [] if len(args) == len(params) else [f"{len(args)} arguments for {len(params)} parameters"]
            for i, ((base, pointer), a) in enumerate(zip(params, args, strict=False)):
                if pointer:
                    null = isinstance(a, np.uint64) and a == 0
                    if not null and not (isinstance(a, np.ndarray) and a.dtype.type in ELEMENTS[base]):
                        problems.append(f"argument {i}: {base}* given {type(a).__name__} "
                                        f"{getattr(a, 'dtype', '')}")
                elif type(a) is not SCALARS[base]:
                    problems.append(f"argument {i}: {base} given {type(a).__name__}")
            seen.append((name, problems))
        return call

    monkeypatch.setenv("PTYCHOPY_BENCH_GPU_GRAPHS", "0")
    monkeypatch.setattr(rt, "cupy", _fake_cupy)
    monkeypatch.setattr(rt, "module", lambda: None)
    monkeypatch.setattr(rt, "kernel", kernel)
    monkeypatch.setattr(rt, "sm_count", lambda: 4)
    monkeypatch.setattr(rt, "FFTPlans", _Plans)
    for module in (epie, dm, lsqml):
        monkeypatch.setattr(module, "pinned_int32", lambda n: np.zeros(n, np.int32))
    yield seen


OPTIONS = {
    "plain": {},
    "subpixel+positions": dict(subpixel_windows=True, position_refinement_from=2),  # no flux fit, no Poisson
    "flux": dict(variable_intensity=True),
    "poisson": dict(noise_model="poisson"),
    "flux+poisson+subpixel+positions": dict(variable_intensity=True, noise_model="poisson", subpixel_windows=True,
                                            position_refinement_from=2),
}


@pytest.mark.parametrize("algorithm", ["ePIE", "DM", "LSQML"])
@pytest.mark.parametrize("option", OPTIONS)
def test_every_fast_engine_launch_matches_its_kernels_signature(launches, algorithm, option):
    settings = EngineSettings(update_probe_from=2, phase_constraint=0, **OPTIONS[option])
    sim = simulate(size_px=N_SIZE, scan_dims=(4, 4), photons=1e6, seed=1, jitter_px=0.4, subpixel=True)
    mask = np.ones((N_SIZE, N_SIZE), dtype=bool)
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm=algorithm, iterations=3,
                         device="cpu", seed=0, beam_diameter_px=0.4 * N_SIZE, settings=settings, valid_mask=mask)
    engine = create_engine(algorithm, rec.state, settings, implementation="fast")
    for it in range(1, 4):
        engine.iterate(it, update_probe=it >= 2)
    bad = {name: problems for name, problems in launches if problems}
    assert launches and not bad, bad
    names = {name for name, _ in launches}
    if settings.variable_intensity:  # the fit's kernels ran (gpu/flux_noise.py, gpu/lsqml_fits.py)
        assert {"nf_flux_normalise", "nf_scale_by_slot"} <= names if algorithm != "LSQML" else "lf_move" in names
    if settings.noise_model == "poisson":
        assert {"lf_poisson_newton", "lf_poisson_apply"} <= names
    if settings.position_refinement_from and algorithm == "LSQML":  # the map its steps are weighed by
        assert "lf_illumination" in names



@pytest.mark.parametrize("algorithm", ["ePIE", "DM"])
def test_fast_epie_column_kernel_and_dm_launches_at_64px_match_their_kernels_signatures(launches, algorithm,
                                                                                       monkeypatch):
    """64^2: ePIE's column kernel (epie_cols, 64^2-256^2), which the 32^2 cases above never launch."""
    from reconstruction.gpu import columns

    size_px = 64
    monkeypatch.setattr(columns, "max_dynamic_shared_bytes", lambda: 1 << 20)
    monkeypatch.setattr(columns, "reserve_shared", lambda n, modes: None)
    monkeypatch.setattr(columns, "twiddles",
                        lambda n: np.exp(-2j * np.pi * np.arange(n) / n).astype(np.complex64).view(DeviceArray))
    settings = EngineSettings(update_probe_from=2, phase_constraint=0)
    sim = simulate(size_px=size_px, scan_dims=(3, 3), photons=1e6, seed=1)
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm=algorithm, iterations=3,
                         device="cpu", seed=0, beam_diameter_px=0.4 * size_px, settings=settings,
                         valid_mask=np.ones((size_px, size_px), dtype=bool))
    engine = create_engine(algorithm, rec.state, settings, implementation="fast")
    for it in range(1, 4):
        engine.iterate(it, update_probe=it >= 2)
    bad = {name: problems for name, problems in launches if problems}
    assert launches and not bad, bad
    if algorithm == "ePIE":
        assert "epie_cols" in {name for name, _ in launches}


def test_the_per_position_sum_slots_of_the_python_side_are_the_kernels_lf_slots():
    """fit_acc and noise_acc are LF_SLOTS doubles a position; kernels/lsqml_fits.cu indexes them by its own
    #define: a mismatch makes positions overwrite each other's sums."""
    from reconstruction.gpu.lsqml_fits import LF_SLOTS

    assert re.search(r"#define\s+LF_SLOTS\s+(\d+)", kernel_source()).group(1) == str(LF_SLOTS)


class _CupyLikeArray(DeviceArray):
    """What :func:`reconstruction.iterate_mean.lerp_inplace` reads as a CuPy array."""


_CupyLikeArray.__module__ = "cupy"


def test_the_iterate_means_fused_update_passes_lerp_c64_its_declared_arguments(launches):
    from reconstruction.iterate_mean import lerp_inplace

    mean = np.zeros((3, 8, 8), np.complex64).view(_CupyLikeArray)
    new = np.ones((3, 8, 8), np.complex64).view(_CupyLikeArray)
    lerp_inplace(mean, new, 1.0 / 3.0)
    assert launches == [("lerp_c64", [])]
