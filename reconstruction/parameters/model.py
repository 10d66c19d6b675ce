"""The one parameter object: a frozen, typed, validated tree that feeds the engines.

Groups follow the paper's GUI: experiment (geometry and scan), data (files), preprocessing (diffraction
patterns), reconstruction (phase retrieval), multigpu, output. Every leaf carries its original command-string
flag, unit, default, hint and range (see :mod:`reconstruction.parameters.spec`). Defaults live here and nowhere
else; where the original's documented and actual defaults disagree we follow what its command-string parser
actually did (``docs/parameters.md``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..safe_paths import NAME_RULE, file_name_problem
from .spec import FieldSpec, closest, param, specs_of

ALGORITHMS = ("ePIE", "DM", "LSQML")
ALGORITHM_ALIASES = {"epie": "ePIE", "dm": "DM", "lsqml": "LSQML", "mls": "LSQML", "ml": "LSQML"}
PVA_LIVE_SCHEME = "pva://"  # -liveSource=pva://<NTNDArray PV>[?...]: frames over pvAccess
LIVE_STALL_MAX_S = 3600.0  # -liveStall: a streaming job waiting for a file or a frame holds a worker this long at most


@dataclass(frozen=True)
class ExperimentParameters:
    """Beam, detector geometry and scan pattern."""

    job_id: str = param("", kind="str", flag="jobID", hint="Name of the run; used in output file names: letters, "
                        "digits, '.', '_' and '-' (not starting with '.'), at most 100 characters.",
                        label="Job ID")
    wavelength_m: float = param(2.48e-10, kind="float", flag="lambda", unit="m", min=1e-13, max=1e-6,
                                hint="X-ray wavelength (12.398e-10 / energy in keV; or give -energy in keV).",
                                label="Wavelength")
    detector_distance_m: float = param(1.0, kind="float", flag="z", unit="m", min=1e-4, max=1000.0,
                                       hint="Sample-to-detector distance.", label="Detector distance")
    detector_pixel_m: float = param(172e-6, kind="float", flag="dx_d", unit="m", min=1e-7, max=1e-2,
                                    hint="Detector pixel size.", label="Detector pixel size")
    beam_size_m: float = param(100e-9, kind="float", flag="beamSize", unit="m", min=1e-10, max=1e-2,
                               hint="Approximate probe diameter; sets the initial probe guess and the "
                                    "simulated probe.", label="Beam size")
    scan_dims: tuple[int, int] = param((12, 12), kind="pair_int", flag="scanDims", min=1, max=100000,
                                       hint="Raster grid (rows, cols); also the number of points of a "
                                            "positions file or spiral (rows*cols).", label="Scan dimensions")
    step_m: tuple[float, float] = param((40e-9, 40e-9), kind="pair_float", flag="step", unit="m", min=0.0,
                                        max=1e-2, hint="Raster step (axis 0, axis 1).", label="Step size")
    spiral_scan: bool = param(False, kind="bool", flag="spiralScan", hint="Use a spiral instead of the raster.",
                              advanced=True)
    flip_scan_axis: bool = param(False, kind="bool", flag="flipScanAxis",
                                 hint="Swap the two coordinates of every scan position.", advanced=True)
    mirror_1st_scan_axis: bool = param(False, kind="bool", flag="mirror1stScanAxis",
                                       hint="Reverse the scan direction along axis 0.", advanced=True)
    mirror_2nd_scan_axis: bool = param(False, kind="bool", flag="mirror2ndScanAxis",
                                       hint="Reverse the scan direction along axis 1.", advanced=True)
    jitter_radius_px: int = param(0, kind="int", flag="jitterRadius", unit="px", min=0, max=1000,
                                  hint="Random offset in [-R, R] added to each coordinate of every position.",
                                  advanced=True)
    drift_m: tuple[float, float] = param((0.0, 0.0), kind="pair_float", flag="drift", unit="m", min=-1e-3,
                                         max=1e-3, hint="Linear drift per scan index (row, col).",
                                         advanced=True)
    positions_file: str = param("", kind="str", flag="lf", hint="Scan positions in metres: a CSV with one "
                                "'axis0, axis1' line per point, an HDF5 file[::dataset] (a CXI translation, a "
                                "ptychopy result) or an EPICS .mda file (its positioners' measured readbacks); "
                                "replaces the raster.", label="Positions file")
    angles: int = param(0, kind="int", flag="angles", min=0, max=100000, advanced=True, no_effect=True,
                        hint="Number of projections; accepted for compatibility, has no effect.")


@dataclass(frozen=True)
class DataParameters:
    """Where the diffraction patterns come from."""

    file_pattern: str = param("", kind="str", flag="fp", hint="Data file pattern; '#' stands for printf's "
                              "'%', e.g. scan152_data_#06d.h5. Extension .h5, .csv or .bin.",
                              label="Data file pattern")
    first_file_index: int = param(0, kind="int", flag="fs", min=0, max=10**9,
                                  hint="Index of the first data file.", label="First file index")
    hdf5_path: str = param("/entry/data/data", kind="str", flag="hdf5path",
                           hint="Dataset path inside each HDF5 file.", label="HDF5 dataset path")
    frames_per_file: int = param(1, kind="int", flag="dpf", min=1, max=10**8,
                                 hint="Diffraction patterns per data file.", label="Frames per file")
    raw_frame_px: tuple[int, int] = param((256, 256), kind="pair_int", flag="nxy", unit="px", min=1, max=65536,
                                          hint="Raw frame size (rows, cols); only needed for .csv/.bin data.",
                                          advanced=True)
    simulate: bool = param(False, kind="bool", flag="simulate", label="Simulated data",
                           hint="Simulate the data from a built-in test object instead of reading files.")
    photons: float = param(0.0, kind="float", flag="photons", unit="counts", min=0.0, max=1e15,
                           hint="Simulation only: photons per pattern for Poisson noise (0 = noise-free).",
                           advanced=True)
    io_threads: int = param(1, kind="int", flag="threads", min=1, max=256, advanced=True,
                            hint="Threads used to read data files.")
    half_set: int = param(0, kind="int", flag="halfSet", min=0, max=2, advanced=True, label="Half set",
                          hint="Reconstruct half of the scan for a half-set FRC: 1 = positions 0, 2, 4, ... in "
                               "scan order, 2 = positions 1, 3, 5, ...; 0 = every position.")
    live_source: str = param("none", kind="choice", flag="liveSource", choices=("none", "swmr", "replay"),
                             open_prefix=PVA_LIVE_SCHEME, advanced=True, label="Live source",
                             hint="Reconstruct while the scan acquires: 'swmr' reads the -fp HDF5 file as a "
                                  "detector writes it (SWMR), 'replay' plays a finished -fp file at -liveRate, "
                                  "'pva://IMAGE_PV?scan=PREFIX' reads an areaDetector NTNDArray over pvAccess "
                                  "(docs/streaming.md).")
    live_rate_hz: float = param(200.0, kind="float", flag="liveRate", unit="frames/s", min=0.01, max=1e7,
                                advanced=True, hint="Replay source: frames per second it plays.")
    live_stall_s: float = param(10.0, kind="float", flag="liveStall", unit="s", min=0.1, max=LIVE_STALL_MAX_S,
                                advanced=True,
                                hint="Live source: no new frame for this long ends the stream as stalled "
                                     "(the partial result is kept); also the wait for the file to appear. At most "
                                     "an hour: the wait holds a worker.")
    live_buffer_frames: int = param(100000, kind="int", flag="liveBuffer", unit="frames", min=1, max=10**9,
                                    advanced=True, hint="Live source: the most frames held in host memory "
                                                        "waiting for the engine; more stops the run with an error.")
    live_window_frames: int = param(0, kind="int", flag="liveWindow", unit="frames", min=0, max=10**9,
                                    advanced=True, hint="Live source: each epoch while acquiring visits only the "
                                                        "newest this many frames (0 = every frame arrived), so the "
                                                        "object keeps up with a fast detector.")
    live_finish_iterations: int = param(20, kind="int", flag="liveFinish", unit="iterations", min=0, max=10**7,
                                        advanced=True, hint="Live source: iterations over all frames once the "
                                                            "scan has ended (or was aborted or stalled).")


@dataclass(frozen=True)
class PreprocessingParameters:
    """How raw detector frames become the patterns the engines fit."""

    size_px: int = param(256, kind="int", flag="size", unit="px", min=16, max=8192,
                         hint="Crop size of the diffraction patterns (= probe size).", label="Pattern size")
    crop_center_px: tuple[int, int] = param((128, 128), kind="pair_int", flag="qxy", unit="px", min=0,
                                            max=65536, hint="Crop centre (row, col) in the raw detector frame.",
                                            label="Pattern centre")
    rotate90: int = param(0, kind="int", flag="rotate90", min=0, max=3,
                          hint="Rotate each cropped pattern by 90 degrees this many times.", advanced=True)
    bit_depth: int = param(32, kind="int", flag="bitDepth", min=1, max=64,
                           hint="Detector bit depth; saturated pixels (>= 2^bitDepth - 1 - threshold) carry "
                                "no constraint.", advanced=True)
    threshold: float = param(0.0, kind="float", flag="threshold", unit="counts", min=0.0, max=1e12,
                             hint="Counts below the threshold become 0; others have it subtracted.")
    sqrt_data: bool = param(False, kind="bool", flag="sqrtData", label="Files hold intensities (sqrtData)",
                            hint="The files hold intensities (photon counts). Without it the files hold amplitudes, "
                                 "which are squared on reading.")
    fft_shift_data: bool = param(False, kind="bool", flag="fftShiftData", label="FFT-shift the patterns",
                                 hint="The files hold patterns with zero frequency at the centre: fftshift them.")
    beamstop_mask: bool = param(False, kind="bool", flag="beamstopMask", advanced=True,
                                hint="Read beamstopMask.h5 beside the data; pixels with mask < 0.99 float.")
    bad_pixel_mask: str = param("", kind="str", flag="mask", advanced=True,
                                hint="Detector bad-pixel mask (boolean HDF5 or .npy, True = bad); masked pixels "
                                     "carry no constraint.")


@dataclass(frozen=True)
class ReconstructionParameters:
    """Phase retrieval: algorithm, schedule and initial guesses."""

    algorithm: str = param("ePIE", kind="choice", flag="algorithm", choices=ALGORITHMS,
                           hint="ePIE (small memory), DM (parallel) or LSQML (best quality); MLs = LSQML.")
    iterations: int = param(100, kind="int", flag="i", unit="iterations", min=0, max=10**7,
                            hint="Number of iterations (epochs).", aliases=("iter",), label="Iterations")
    time_limit_s: float = param(0.0, kind="float", flag="T", unit="s", min=-1.0, max=1e9,
                                hint="Stop once the reconstruction has run this long (<= 0: no limit).",
                                label="Time limit")
    probe_modes: int = param(1, kind="int", flag="probeModes", min=1, max=64,
                             hint="Number of incoherent probe modes.", label="Probe modes")
    update_probe_from: int = param(10, kind="int", flag="updateProbe", unit="iterations", min=0, max=10**7,
                                   hint="Probe updates start at this iteration.", label="Update probe from")
    update_modes_from: int = param(20, kind="int", flag="updateModes", unit="iterations", min=0, max=10**7,
                                   hint="Extra probe modes are seeded and updated from this iteration.",
                                   label="Update modes from")
    phase_constraint: int = param(1, kind="int", flag="phaseConstraint", unit="iterations", min=0, max=10**7,
                                  hint="For the first N iterations positive object phases are set to 0.",
                                  advanced=True)
    refine_positions: bool = param(False, kind="bool", flag="refinePositions", label="Refine positions",
                                   hint="Every engine: refine the scan positions (from iteration -PPS on); windows "
                                        "then follow sub-pixel positions. Off: positions as given, whole pixels.",
                                   advanced=True)
    variable_intensity: bool = param(False, kind="bool", flag="variableIntensity", label="Variable intensity",
                                     hint="Every engine: fit each position's incident intensity (flux "
                                          "fluctuations, top-up, attenuators) instead of assuming one for all. On "
                                          "the GPU every engine keeps its fast path.",
                                     advanced=True)
    subpixel_windows: bool = param(False, kind="bool", flag="subpixelWindows", label="Sub-pixel windows",
                                   hint="Every engine: windows follow fractional scan positions as given (the "
                                        "probe moved by each fraction), never rounded. On the GPU every engine "
                                        "keeps its fast path.",
                                   advanced=True)
    position_search_from: int = param(5, kind="int", flag="PPS", unit="iterations", min=1, max=10**7,
                                      label="Refine positions from",
                                      hint="With -refinePositions: position refinement starts at this "
                                           "iteration (the original's MLs always refined from here).",
                                      advanced=True)
    position_affine: str = param("none", kind="str", flag="positionAffine", label="Free affine terms",
                                 hint="With -refinePositions: the terms of the scan's global affine error that are "
                                      "fitted (comma list of scale, asymmetry, rotation, shear, offset; 'all'; "
                                      "'none' holds the geometry as given). Fitted from each window's content; "
                                      "needs a good probe (docs/parameters.md).",
                                 advanced=True)
    coarse_search_px: int = param(0, kind="int", flag="coarseSearch", unit="px", min=0, max=32,
                                  label="Coarse position search",
                                  hint="With -refinePositions: try each window at every whole-pixel shift within "
                                       "this radius in the first -coarseEpochs refining iterations (0 = off). "
                                       "Needs a good probe guess (docs/parameters.md).",
                                  advanced=True)
    coarse_search_epochs: int = param(5, kind="int", flag="coarseEpochs", unit="iterations", min=1, max=10**7,
                                      label="Coarse search iterations",
                                      hint="With -coarseSearch: the number of first refining iterations that "
                                           "search.",
                                      advanced=True)
    position_affine_delay: int = param(0, kind="int", flag="affineDelay", unit="iterations", min=0, max=10**7,
                                       label="Affine fit after",
                                       hint="With -positionAffine: the affine terms are fitted after this many "
                                            "refining iterations (the per-position corrections first).",
                                       advanced=True)
    position_affine_epochs: int = param(10, kind="int", flag="affineEpochs", unit="iterations", min=1, max=10**7,
                                        label="Affine fit iterations",
                                        hint="With -positionAffine: the affine terms are fitted in this many "
                                             "iterations, the probe held meanwhile; then the geometry found is held.",
                                        advanced=True)
    delta_p: float = param(0.1, kind="float", flag="delta_p", min=0.0, max=10.0, advanced=True,
                           hint="LSQML: regularisation of the object/probe update, relative to the maximum.")
    beta_decay: float = param(0.0, kind="float", flag="betaDecay", min=0.0, max=1.0, advanced=True,
                              hint="LSQML: halve the step damping (0.9, down to 0.1) after each iteration whose "
                                   "error fell by less than this fraction (0 = off). Lowers the floor where "
                                   "mini-batches fight over what the model cannot fit (measured data: 0.003).")
    mean_span: int = param(5, kind="int", flag="meanSpan", min=1, max=1000, advanced=True,
                           hint="LSQML: the object and probe the run reports (live, in the result file and the "
                                "exports) are the exponential mean of the iterations' estimates with this span "
                                "(weight 2/(span+1) on the newest, from iteration 6), which averages out the "
                                "mini-batches' noise while the step stays full. 1 = the last iteration's as it is.")
    dm_relax: float = param(0.05, kind="float", flag="fourierRelax", min=0.0, max=1.0, advanced=True,
                            label="DM Fourier relaxation",
                            hint="DM with -noise=gaussian: a pattern whose model is within this relative rms of "
                                 "the measured amplitudes is not projected further; one further away moves only "
                                 "that close (0 = exact modulus projection). Stops DM from fitting the noise.")
    noise_model: str = param("gaussian", kind="choice", flag="noise", choices=("gaussian", "poisson"),
                             hint="Noise model of every engine: gaussian (the amplitude fit; ePIE and DM "
                                  "project onto the measured moduli) or poisson (a step of the Poisson likelihood; "
                                  "for low doses). On the GPU every engine keeps its fast path.", advanced=True)
    batch_size: int = param(0, kind="int", flag="batch", min=0, max=10**7, advanced=True,
                            hint="LSQML mini-batch size (0 = about N/40, at least 1).")
    rms: bool = param(False, kind="bool", flag="RMS", advanced=True,
                      hint="Also report the original's RMS error (mean over positions of sum|A-|F psi||/sum A).")
    probe_guess: str = param("", kind="str", flag="probeGuess", hint="CSV (complex, size x size) initial probe.",
                             label="Probe guess")
    object_guess: str = param("", kind="str", flag="objectGuess", label="Object guess",
                              hint="CSV (complex) initial object; pasted centred into the object array.")
    seed: int = param(-1, kind="int", flag="seed", min=-1, max=2**31 - 1, advanced=True,
                      hint="Random seed for visiting order and mode seeding (-1 = from the clock).")
    device: str = param("auto", kind="choice", flag="device", choices=("auto", "cpu", "gpu"),
                        hint="auto uses the GPU (CuPy) when present, else the CPU (NumPy).")
    memory_cap_gib: float = param(0.0, kind="float", flag="memCapGiB", unit="GiB", min=0.0, max=1e6,
                                  label="GPU memory cap", advanced=True,
                                  hint="Most GPU memory the run may use (0 = whatever is free). A larger ePIE or "
                                       "LSQML dataset streams from pinned host memory; a run that cannot fit is "
                                       "refused before it starts, saying how much it needs.")


@dataclass(frozen=True)
class MultiGpuParameters:
    """Splitting one reconstruction across several GPUs (issue: several GPUs)."""

    overlap_px: int = param(0, kind="int", flag="overlap", unit="px", min=0, max=100000,
                            hint="Halo shared between neighbouring GPU regions.", label="Overlap")
    share_frequency: int = param(10, kind="int", flag="shareFrequency", unit="iterations", min=1, max=10**7,
                                 hint="Share the overlap every N iterations.", label="Share frequency")
    gpus: str = param("", kind="str", flag="gpus", label="GPUs",
                      hint="Comma list of GPU indices to split one reconstruction across, e.g. 0,1,2,3 "
                           "('' or one index = one device).")


@dataclass(frozen=True)
class OutputParameters:
    """Results and previews."""

    output_dir: str = param("data", kind="str", flag="outputDir", label="Output directory",
                            hint="Directory for result files (the original always wrote to ./data).")
    save_every: int = param(0, kind="int", flag="save", unit="iterations", min=0, max=10**9, advanced=True,
                            hint="Also write intermediate results every N iterations (0 = never).")
    binary_output: bool = param(False, kind="bool", flag="binaryOutput", advanced=True,
                                hint="Write raw complex64 .bin files instead of CSV for the original's outputs.")
    update_vis: int = param(10, kind="int", flag="updateVis", unit="iterations", min=0, max=10**7,
                            advanced=True, hint="Preview refresh period.")
    blind: bool = param(True, kind="bool", flag="blind", advanced=True, no_effect=True,
                        hint="Original visualisation switch; accepted for compatibility, has no effect.")
    ws_server_url: str = param("", kind="str", flag="wsServerUrl", advanced=True, no_effect=True,
                               hint="Original render-server URL; accepted for compatibility, has no effect.")


GROUPS: dict[str, type] = {
    "experiment": ExperimentParameters,
    "data": DataParameters,
    "preprocessing": PreprocessingParameters,
    "reconstruction": ReconstructionParameters,
    "multigpu": MultiGpuParameters,
    "output": OutputParameters,
}

GROUP_TITLES = {
    "experiment": "Experiment",
    "data": "Data files",
    "preprocessing": "Diffraction preprocessing",
    "reconstruction": "Phase retrieval",
    "multigpu": "Multi-GPU",
    "output": "Output",
}


#: The message of a ParameterError lists at most this many problems (``problems`` keeps them all), and only
#: this many unknown flags get a "did you mean" (a fuzzy match each), so a hostile string costs little.
MAX_REPORTED_PROBLEMS = 20


class ParameterError(ValueError):
    """One or more parameters are wrong; ``problems`` lists each (path, flag, value, message)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "; ".join(p.message for p in problems[:MAX_REPORTED_PROBLEMS])
        more = len(problems) - MAX_REPORTED_PROBLEMS
        super().__init__(shown + (f"; and {more} more problems" if more > 0 else ""))


@dataclass(frozen=True)
class Problem:
    path: str  # "" for an unknown flag
    flag: str
    value: Any
    message: str


def leaf_specs() -> list[FieldSpec]:
    """Every leaf parameter, in display order."""
    out: list[FieldSpec] = []
    for group, cls in GROUPS.items():
        out.extend(specs_of(cls, group))
    return out


#: h * c in keV * m (CODATA 2018): a photon of E keV has the wavelength HC_KEV_M / E metres.
HC_KEV_M = 1.239841984e-9
WAVELENGTH_PATH = "experiment.wavelength_m"
ENERGY_PATH = "experiment.energy_kev"
#: -energy and -lambda given together must agree within this relative difference.
ENERGY_AGREEMENT = 1e-3
#: ``-energy`` (keV) is an input, not a leaf: :meth:`Parameters.replace` turns it into ``experiment.wavelength_m``
#: (the one stored value), so every reader keeps reading the wavelength.
ENERGY_SPEC = FieldSpec(
    path=ENERGY_PATH, group="experiment", name="energy_kev", kind="float", default=None, flag="energy", unit="keV",
    hint="X-ray photon energy instead of the wavelength: converted once to -lambda = 1.2398e-9 m / E. With "
         "-lambda too, the two must agree within 0.1 %.", min=0.1, max=1000.0, label="Energy")


def input_specs() -> list[FieldSpec]:
    """The leaves plus the input-only ``-energy`` (after the wavelength): what a form or ``ptychopy params``
    offers."""
    out: list[FieldSpec] = []
    for spec in leaf_specs():
        out.append(spec)
        if spec.path == WAVELENGTH_PATH:
            out.append(ENERGY_SPEC)
    return out


def wavelength_from_energy_m(energy_kev: float) -> float:
    """The wavelength in metres of a photon of ``energy_kev`` keV."""
    return HC_KEV_M / energy_kev


_SPECS = leaf_specs()
_BY_PATH = {s.path: s for s in _SPECS}
_BY_PATH[ENERGY_PATH] = ENERGY_SPEC
_BY_FLAG: dict[str, FieldSpec] = {}
for _s in [*_SPECS, ENERGY_SPEC]:
    for _name in (_s.flag, *_s.aliases):
        _BY_FLAG[_name.lower()] = _s


def spec_for_flag(flag: str) -> FieldSpec | None:
    """Look a command-string flag up case-insensitively (leading dashes ignored)."""
    return _BY_FLAG.get(flag.lstrip("-").lower())


def spec_for_path(path: str) -> FieldSpec:
    return _BY_PATH[path]


def known_flags() -> list[str]:
    return [s.flag for s in _SPECS]


def unknown_flag_problem(flag: str, value: Any, *, suggest: bool = True) -> Problem:
    """The problem of an unknown flag; with ``suggest``, the closest known flag as a hint (a fuzzy match)."""
    name = flag.lstrip("-")
    near = closest(name[:100], known_flags() + [s.name for s in _SPECS]) if suggest else None
    if near is not None and near in _BY_FLAG_NAMES_TO_FLAG:
        near = _BY_FLAG_NAMES_TO_FLAG[near]
    hint = f"; did you mean -{near}?" if near else "; run 'ptychopy params' for the list"
    shown = name if len(name) <= 100 else f"{name[:100]}... ({len(name)} characters)"
    return Problem("", flag[:100], value, f"unknown parameter -{shown}{hint}")


_BY_FLAG_NAMES_TO_FLAG = {s.name: s.flag for s in _SPECS}


def coerce(spec: FieldSpec, value: Any) -> Any:
    """Convert a raw value (text from a command string or form, or a Python value) to the leaf's type.

    Raises ValueError with a message naming what was expected.
    """
    try:
        return _coerce(spec, value)
    except (TypeError, ValueError) as exc:
        detail = f" ({exc})" if str(exc) and not str(exc).startswith(("invalid literal", "could not")) else ""
        raise ValueError(f"-{spec.flag}={_show(value)}: expected {spec.expected}{detail}") from None


def _show(value: Any) -> str:
    """A value as it appears in an error message (long text is cut at 120 characters)."""
    text = ",".join(str(v) for v in value) if isinstance(value, tuple | list) else str(value)
    return text if len(text) <= 120 else f"{text[:120]}... ({len(text)} characters)"


_TRUE = {"1", "true", "yes", "on", ""}
_FALSE = {"0", "false", "no", "off"}


def _coerce(spec: FieldSpec, value: Any) -> Any:
    k = spec.kind
    if k == "str":
        if value is None:
            return ""
        if not isinstance(value, str):
            raise TypeError("not text")
        return value.strip()
    if k == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("")
    if k == "int":
        return _to_int(value)
    if k == "float":
        return _to_float(value)
    if k == "choice":
        text = str(value).strip()
        if spec.flag == "algorithm":
            canon = ALGORITHM_ALIASES.get(text.lower())
            if canon:
                return canon
        if spec.open_prefix and text.startswith(spec.open_prefix) and len(text) > len(spec.open_prefix):
            return text  # e.g. -liveSource's NTNDArray PV (ptychopy.pva_source reads the address)
        for c in spec.choices:
            if c.lower() == text.lower():
                return c
        raise ValueError("")
    if k in ("pair_int", "pair_float"):
        conv = _to_int if k == "pair_int" else _to_float
        if isinstance(value, str):
            parts = [p for p in value.replace(" ", "").split(",")]
        elif isinstance(value, tuple | list):
            parts = list(value)
        else:
            parts = [value]
        if len(parts) == 1:
            # The original: -scanDims=N means (N, 1); other pairs take the one value for both axes.
            v = conv(parts[0])
            return (v, 1) if spec.flag == "scanDims" else (v, v)
        if len(parts) != 2:
            raise ValueError("")
        return (conv(parts[0]), conv(parts[1]))
    raise AssertionError(k)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        f = float(text)  # accept "1e3"
        if not f.is_integer():
            raise ValueError("not a whole number") from None
        return int(f)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("not a number")
    f = float(value)
    if f != f or f in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return f


def parse_gpu_list(text: str) -> tuple[int, ...]:
    """'0,1,2,3' -> (0, 1, 2, 3); '' -> (); ValueError for anything but distinct non-negative integers."""
    items = [t.strip() for t in str(text).split(",")] if str(text).strip() else []
    out: list[int] = []
    for t in items:
        if not t.isdigit():
            raise ValueError(f"{t!r} is not a GPU index: expected a comma list of integers such as 0,1,2,3")
        out.append(int(t))
    if len(set(out)) != len(out):
        raise ValueError("a GPU index appears twice")
    return tuple(out)


def check_range(spec: FieldSpec, value: Any) -> str | None:
    """None when ``value`` is within the leaf's range, else the error message."""
    values = value if isinstance(value, tuple) else (value,)
    if spec.kind in ("int", "float", "pair_int", "pair_float"):
        for v in values:
            if (spec.min is not None and v < spec.min) or (spec.max is not None and v > spec.max):
                return f"-{spec.flag}={_show(value)}: out of range, expected {spec.expected}"
    return None


def _range_problems(values: dict[str, Any]) -> list[Problem]:
    out = []
    for path, value in values.items():
        spec = _BY_PATH[path]
        msg = check_range(spec, value)
        if msg:
            out.append(Problem(path, spec.flag, value, msg))
    return out


@dataclass(frozen=True)
class Parameters:
    """The whole parameter tree. Build it with :meth:`from_cmdstr`, :meth:`from_flags` or :meth:`from_dict`."""

    experiment: ExperimentParameters = dataclasses.field(default_factory=ExperimentParameters)
    data: DataParameters = dataclasses.field(default_factory=DataParameters)
    preprocessing: PreprocessingParameters = dataclasses.field(default_factory=PreprocessingParameters)
    reconstruction: ReconstructionParameters = dataclasses.field(default_factory=ReconstructionParameters)
    multigpu: MultiGpuParameters = dataclasses.field(default_factory=MultiGpuParameters)
    output: OutputParameters = dataclasses.field(default_factory=OutputParameters)

    # -- derived quantities -------------------------------------------------------------------------------
    @property
    def pixel_size_m(self) -> float:
        """Sample-plane pixel size lambda * z / (size * dx_d), in metres."""
        e = self.experiment
        return e.wavelength_m * e.detector_distance_m / (self.preprocessing.size_px * e.detector_pixel_m)

    @property
    def n_positions(self) -> int:
        rows, cols = self.experiment.scan_dims
        return rows * cols

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_cmdstr(cls, cmdstr: str) -> Parameters:
        """Parse an original-style command string (see :mod:`reconstruction.parameters.cmdstr`)."""
        from .cmdstr import parse_cmdstr

        return cls.from_flags(parse_cmdstr(cmdstr))

    @classmethod
    def from_flags(cls, flags: dict[str, Any] | list[tuple[str, Any]], base: Parameters | None = None) -> Parameters:
        """Build from flag/value pairs (later pairs win). Unknown flags and bad values raise ParameterError."""
        items = list(flags.items()) if isinstance(flags, dict) else list(flags)
        values: dict[str, Any] = {}
        problems: list[Problem] = []
        for flag, raw in items:
            spec = spec_for_flag(str(flag))
            if spec is None:
                problems.append(unknown_flag_problem(str(flag), raw,
                                                     suggest=len(problems) < MAX_REPORTED_PROBLEMS))
                continue
            try:
                values[spec.path] = coerce(spec, raw)
            except ValueError as exc:
                problems.append(Problem(spec.path, spec.flag, raw, str(exc)))
        problems.extend(_range_problems(values))
        if problems:
            raise ParameterError(problems)
        return (base or cls()).replace(values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parameters:
        """Build from ``to_dict()`` output: ``{group: {name: value}}``; also accepts ``{"group.name": v}``."""
        values: dict[str, Any] = {}
        problems: list[Problem] = []
        for key, val in data.items():
            if isinstance(val, dict) and key in GROUPS:
                for name, v in val.items():
                    values[f"{key}.{name}"] = v
            else:
                values[key] = val
        converted: dict[str, Any] = {}
        for path, raw in values.items():
            if path not in _BY_PATH:
                problems.append(unknown_flag_problem(path.split(".")[-1], raw,
                                                     suggest=len(problems) < MAX_REPORTED_PROBLEMS))
                continue
            spec = _BY_PATH[path]
            try:
                converted[path] = coerce(spec, raw)
            except ValueError as exc:
                problems.append(Problem(path, spec.flag, raw, str(exc)))
        problems.extend(_range_problems(converted))
        if problems:
            raise ParameterError(problems)
        return cls().replace(converted)

    @classmethod
    def from_json(cls, text: str) -> Parameters:
        return cls.from_dict(json.loads(text))

    def replace(self, values: dict[str, Any]) -> Parameters:
        """A copy with ``{"group.name": value}`` replaced (values already typed or raw); validated.

        ``experiment.energy_kev`` (``-energy``) becomes ``experiment.wavelength_m`` here, the one place it is
        converted; a wavelength given alongside that disagrees by more than 0.1 % is refused."""
        values = _energy_to_wavelength(values)
        per_group: dict[str, dict[str, Any]] = {}
        problems: list[Problem] = []
        for path, value in values.items():
            spec = _BY_PATH.get(path)
            if spec is None:
                problems.append(unknown_flag_problem(path.split(".")[-1], value))
                continue
            try:
                per_group.setdefault(spec.group, {})[spec.name] = coerce(spec, value)
            except ValueError as exc:
                problems.append(Problem(path, spec.flag, value, str(exc)))
        if problems:
            raise ParameterError(problems)
        groups = {g: dataclasses.replace(getattr(self, g), **kv) for g, kv in per_group.items()}
        new = dataclasses.replace(self, **groups)
        new.validate()
        return new

    def validate(self) -> None:
        """Range checks on every leaf plus cross-field rules; raises ParameterError listing all problems."""
        problems: list[Problem] = []
        for spec in _SPECS:
            value = self.get(spec.path)
            msg = check_range(spec, value)
            if msg:
                problems.append(Problem(spec.path, spec.flag, value, msg))
        e = self.experiment
        name_problem = file_name_problem(e.job_id) if e.job_id else None
        if name_problem:
            problems.append(Problem("experiment.job_id", "jobID", e.job_id,
                                    f"-jobID={e.job_id[:120]!r}: the job ID names the output files, so it must "
                                    f"be a plain file name ({name_problem}): {NAME_RULE}"))
        if (e.step_m[0] <= 0 or e.step_m[1] <= 0) and not e.positions_file:
            problems.append(Problem("experiment.step_m", "step", e.step_m,
                                    f"-step={_show(e.step_m)}: steps must be > 0 for a raster scan"))
        try:
            gpus = parse_gpu_list(self.multigpu.gpus)
        except ValueError as exc:
            gpus = ()
            problems.append(Problem("multigpu.gpus", "gpus", self.multigpu.gpus, f"-gpus={self.multigpu.gpus}: {exc}"))
        r = self.reconstruction
        for name, flag, what in (("refine_positions", "refinePositions", "position refinement"),
                                 ("variable_intensity", "variableIntensity", "the per-position intensity fit")):
            if not getattr(r, name):
                continue
            if len(gpus) > 1:
                problems.append(Problem(f"reconstruction.{name}", flag, True,
                                        f"-{flag}: {what} runs on one device, not split across "
                                        f"-gpus={self.multigpu.gpus}"))
        try:
            affine_terms(r.position_affine)
        except ValueError as exc:
            problems.append(Problem("reconstruction.position_affine", "positionAffine", r.position_affine,
                                    f"-positionAffine={r.position_affine[:80]}: {exc}"))
        if r.subpixel_windows and len(gpus) > 1:
            problems.append(Problem("reconstruction.subpixel_windows", "subpixelWindows", True,
                                    f"-subpixelWindows: sub-pixel windows run on one device, not split across "
                                    f"-gpus={self.multigpu.gpus}"))
        if problems:
            raise ParameterError(problems)

    # -- reading ------------------------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        group, name = path.split(".")
        return getattr(getattr(self, group), name)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready ``{group: {name: value}}`` (pairs become lists)."""
        out: dict[str, dict[str, Any]] = {}
        for spec in _SPECS:
            v = self.get(spec.path)
            out.setdefault(spec.group, {})[spec.name] = list(v) if isinstance(v, tuple) else v
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def changed(self) -> dict[str, Any]:
        """``{path: value}`` of the leaves that differ from the defaults."""
        return {s.path: self.get(s.path) for s in _SPECS if self.get(s.path) != s.default}

    def to_cmdstr(self, program: str = "./ptycho") -> str:
        """An original-style command string that parses back to this object (non-default leaves only)."""
        from .cmdstr import format_cmdstr

        return format_cmdstr(self, program)


def _energy_to_wavelength(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``experiment.energy_kev`` replaced by the wavelength it means (ParameterError naming -energy
    when it is no number, out of range, or disagrees with a wavelength given with it)."""
    if ENERGY_PATH not in values:
        return values
    out = dict(values)
    raw = out.pop(ENERGY_PATH)
    try:
        energy = coerce(ENERGY_SPEC, raw)
    except ValueError as exc:
        raise ParameterError([Problem(ENERGY_PATH, "energy", raw, str(exc))]) from None
    msg = check_range(ENERGY_SPEC, energy)
    if msg:
        raise ParameterError([Problem(ENERGY_PATH, "energy", raw, msg)])
    wavelength = wavelength_from_energy_m(energy)
    if WAVELENGTH_PATH in out:
        try:
            given = coerce(_BY_PATH[WAVELENGTH_PATH], out[WAVELENGTH_PATH])
        except ValueError:
            return out  # the wavelength's own error is reported by replace
        if abs(given / wavelength - 1.0) > ENERGY_AGREEMENT:
            raise ParameterError([Problem(
                ENERGY_PATH, "energy", raw,
                f"-energy={_show(raw)} keV is a wavelength of {wavelength:.5g} m, but -lambda={given:.5g} m was "
                f"given too: give one of them, or two that agree within {ENERGY_AGREEMENT:.1%}")])
    out[WAVELENGTH_PATH] = wavelength
    return out


def param_table() -> list[dict[str, Any]]:
    """Rows for ``ptychopy params`` and the docs: flag, path, unit, default, range, hint (the leaves and the
    input-only ``-energy``)."""
    rows = []
    for s in input_specs():
        rows.append(
            dict(flag=s.flag, path=s.path, group=s.group, kind=s.kind, unit=s.unit,
                 default="(from -lambda)" if s.default is None else _show(s.default),
                 expected=s.expected, hint=s.hint, no_effect=s.no_effect)
        )
    return rows


def affine_terms(text: str) -> tuple[str, ...]:
    """The free affine terms a ``-positionAffine`` value names: 'none' or '' -> (), 'all' -> every term, else a
    comma list of scale, asymmetry, rotation, shear, offset (ValueError naming an unknown one)."""
    from ..physics.position_update import AFFINE_TERMS

    words = [w.strip().lower() for w in str(text).split(",") if w.strip()]
    if words in ([], ["none"]):
        return ()
    if words == ["all"]:
        return AFFINE_TERMS
    unknown = [w for w in words if w not in AFFINE_TERMS]
    if unknown:
        raise ValueError(f"unknown affine term {unknown[0]!r}: expected 'none', 'all' or a comma list of "
                         f"{', '.join(AFFINE_TERMS)}")
    return tuple(t for t in AFFINE_TERMS if t in words)
