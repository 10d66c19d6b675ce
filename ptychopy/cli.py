"""The ``ptychopy`` command.

    ptychopy run "<command string>"   reconstruct with a progress bar; write the result files at the end
    ptychopy params [--json]          every parameter with its flag, unit, default and hint
    ptychopy demo                     the main job: the web site with a live demo reconstruction
                                      (a terminal demo when the web extras are not installed)
    ptychopy serve | bridge | simioc | simwrite | export | inspect ...   (see each --help)

``serve`` lives in ``webapp``, ``bridge``/``simioc`` in ``epics_bridge``: those packages register them as entry
points (group ``ptychopy.commands`` in pyproject.toml; ``serve --bridge`` finds the bridge through the group
``ptychopy.serve_bridge``), so this package neither imports nor names them. ``export`` and ``simwrite`` live in
``reconstruction``, below this package.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from reconstruction.errors import ReconstructionError
from reconstruction.parameters import GROUP_TITLES, ParameterError, Parameters, param_table
from reconstruction.safe_paths import UnsafePathError

#: Entry point groups the packages above this one register their commands in (pyproject.toml).
COMMANDS_GROUP = "ptychopy.commands"
SERVE_BRIDGE_GROUP = "ptychopy.serve_bridge"


def _export_main(argv: list[str]) -> Any:
    from reconstruction.io.export import main as export_main

    return export_main(argv)


def _simwrite_main(argv: list[str]) -> Any:
    from reconstruction.live.simwrite import main as simwrite_main

    return simwrite_main(argv)


# subcommand -> (the command's function, or the name of its entry point in COMMANDS_GROUP; help)
DELEGATED: dict[str, tuple[Callable[[list[str]], Any] | str, str]] = {
    "serve": ("serve", "run the web site (embedded mode unless DATABASE_URL/REDIS_URL are set); "
              "--bridge CONFIG also runs the EPICS bridge in-process"),
    "bridge": ("bridge", "run the EPICS bridge that queues a reconstruction per finished scan"),
    "simioc": ("simioc", "run a simulated beamline IOC that plays scans"),
    "export": (_export_main, "export a result file to TIFF, PNG, CSV or a ptychodus product"),
    "simwrite": (_simwrite_main, "write a simulated scan into an HDF5 file with SWMR at a frame rate (a detector "
                 "for -liveSource=swmr)"),
}

DEMO_CMDSTR = ("./ptycho -jobID=demo -algorithm=LSQML -simulate=1 -size=64 -scanDims=15,15 -step=200e-9,200e-9 "
               "-beamSize=900e-9 -photons=1e6 -i=60 -updateProbe=2 -phaseConstraint=0 -seed=0")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ParameterError as exc:
        print(f"ptychopy: parameter error: {exc}", file=sys.stderr)
        return 2
    except (ReconstructionError, OSError, UnsafePathError) as exc:
        print(f"ptychopy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:
        detail = f" ({exc})" if str(exc) else ""
        print(f"ptychopy: out of host memory{detail}: the run needs more memory than this machine has free. "
              "Use fewer or smaller patterns (-scanDims, -size), fewer -probeModes, or a machine with more "
              "memory.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ptychopy: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptychopy", description="X-ray ptychography reconstruction (ePIE, DM, LSQML)")
    sub = p.add_subparsers(metavar="command")
    r = sub.add_parser("run", help="reconstruct from an original-style command string")
    r.add_argument("cmdstr", help='e.g. "./ptycho -simulate=1 -size=64 -scanDims=15,15 -i=50"')
    r.add_argument("--out", help="output directory (overrides -outputDir)")
    r.add_argument("--device", choices=("auto", "cpu", "gpu"), help="overrides -device")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--metadata", action="store_true",
                   help="take the wavelength, distance, detector pixel, beam centre (-qxy), mask and positions that "
                        "the first data file records (NeXus/NXmx, CXI), and the grid, steps and energy of an EPICS "
                        "MDA file given as -lf, unless the command string gives them")
    r.set_defaults(func=cmd_run)
    pa = sub.add_parser("params", help="list every parameter with its flag, unit, default and hint")
    pa.add_argument("--json", action="store_true", help="machine-readable output")
    pa.add_argument("--all", action="store_true", help="include advanced parameters")
    pa.set_defaults(func=cmd_params)
    d = sub.add_parser("demo", help="the main job: web site with a live demo (terminal demo without web extras)")
    d.add_argument("--terminal", action="store_true", help="run the terminal demo even if the web app is there")
    d.add_argument("--port", type=int, default=8000)
    d.set_defaults(func=cmd_demo)
    i = sub.add_parser("inspect", help="describe the scan a command string points at (reads little data)")
    i.add_argument("cmdstr")
    i.set_defaults(func=cmd_inspect)
    c = sub.add_parser("compare", help="compare two result files: shift, global phase, FRC resolution")
    c.add_argument("a", help="reference result file (.h5)")
    c.add_argument("b", help="result file to align onto it")
    c.add_argument("--threshold", type=float, default=None, help="FRC threshold (default 1/7)")
    c.add_argument("--csv", help="write the FRC curve here (frequency_per_m, frc)")
    c.set_defaults(func=cmd_compare)
    for name, (_command, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


def registered(group: str, name: str) -> Any:
    """The object entry point ``name`` of ``group`` names (loaded now). ``ImportError`` when no installed package
    registers it (ptychopy not installed: ``pip install -e .``) or when loading it fails (its extras missing)."""
    found = entry_points(group=group, name=name)
    if not found:
        raise ImportError(f"no package registers '{name}' in the entry point group {group} (is ptychopy installed? "
                          "pip install -e .)")
    return next(iter(found)).load()


def _delegate(name: str, rest: list[str]) -> int:
    if name == "serve":
        return _serve(rest)
    command, _help = DELEGATED[name]
    try:
        run = registered(COMMANDS_GROUP, command) if isinstance(command, str) else command
    except ImportError as exc:
        print(f"ptychopy {name}: not available ({exc}); install the extras: pip install 'ptychopy[web,epics]'",
              file=sys.stderr)
        return 1
    return int(run(rest) or 0)


def _serve(rest: list[str]) -> int:
    """``ptychopy serve [--bridge CONFIG] ...``: the web site; with ``--bridge`` the EPICS bridge runs in the same
    process (embedded mode: its jobs reach the in-process worker at once)."""
    try:
        serve = registered(COMMANDS_GROUP, "serve")
    except ImportError as exc:
        print(f"ptychopy serve: not available ({exc}); install the extras: pip install 'ptychopy[web]'",
              file=sys.stderr)
        return 1
    return int(serve(rest, make_bridge_factory=_bridge_factory) or 0)


def _bridge_factory(startup_error: type[Exception]) -> Callable[[str], Any]:
    """``factory(config_path)`` for the web server's ``--bridge``: the bridge's own check of the configuration
    (entry point ``epics`` of ``ptychopy.serve_bridge``), which raises ``startup_error`` with one line naming the
    file and the problem and returns the hook that starts the bridge once the web side is up. Loaded only when
    ``--bridge`` is given."""

    def factory(config_path: str) -> Any:
        try:
            bridge_hook = registered(SERVE_BRIDGE_GROUP, "epics")
        except ImportError as exc:
            raise startup_error(f"--bridge: the EPICS bridge is not available ({exc}); "
                                "install the extras: pip install 'ptychopy[epics]'") from None
        return bridge_hook(config_path, startup_error)

    return factory


def cmd_run(args: argparse.Namespace) -> int:
    params = Parameters.from_cmdstr(args.cmdstr)
    overrides: dict[str, Any] = {}
    if args.out:
        overrides["output.output_dir"] = args.out
    if args.device:
        overrides["reconstruction.device"] = args.device
    if overrides:
        params = params.replace(overrides)
    if args.metadata:
        from reconstruction.io.scan_metadata import apply_file_metadata, describe_metadata, given_in_cmdstr

        given = given_in_cmdstr(args.cmdstr)
        mda_file = params.experiment.positions_file
        if mda_file.lower().endswith(".mda"):  # the grid first: it says how many frames the scan has
            from reconstruction.io import apply_mda

            before = params
            params = apply_mda(params, mda_file, given)
            if not args.quiet:
                taken = sorted(k for k, v in params.changed().items() if before.get(k) != v)
                print(f"MDA {mda_file}: " + (", ".join(taken) or "nothing new"), file=sys.stderr)
        params, meta = apply_file_metadata(params, given)
        if not args.quiet:
            print(f"{meta.layout} metadata: " + "; ".join(describe_metadata(meta)), file=sys.stderr)
    if params.data.live_source != "none":
        from .live import run_live

        paths = run_live(params, quiet=args.quiet)
    else:
        paths = run_with_progress(params, quiet=args.quiet)
    for path in paths:
        print(f"wrote {path}")
    return 0


def run_with_progress(params: Parameters, quiet: bool = False) -> list[Path]:
    """Load, reconstruct with a tqdm progress bar (iteration, error, ETA) and write the result files."""
    from tqdm import tqdm

    from reconstruction.multigpu import from_parameters

    from .session import write_outputs

    t0 = time.perf_counter()
    load_bar: Any = None

    def on_load(done: int, total: int) -> None:
        nonlocal load_bar
        if quiet:
            return
        if load_bar is None:
            load_bar = tqdm(total=total, desc="loading", unit="frame", leave=False)
        load_bar.n = done
        load_bar.refresh()

    rec = from_parameters(params, progress=on_load)  # split over -gpus when it lists several
    if load_bar is not None:
        load_bar.close()
    r = params.reconstruction
    h, w = rec.object_shape
    print(f"{r.algorithm} on {rec.device}: {rec.n_positions} patterns of {rec.size_px}^2, object {h}x{w}, "
          f"{r.iterations} iterations (set-up {time.perf_counter() - t0:.1f} s)")
    for line in rec.plan.summary_lines():
        print(line)
    bar = tqdm(total=rec.iterations, desc=r.algorithm, unit="it", disable=quiet)
    with bar:
        for progress in rec:
            bar.set_postfix(error=f"{progress.error:.4g}")
            bar.update(1)
    if rec.stopped_early:
        print(f"stopped early: {rec.stopped_early}")
    result = rec.result()
    print(f"final error {result.errors[-1]:.5g} after {result.iterations} iterations "
          f"({sum(result.iteration_s):.1f} s)" if result.errors else "no iteration ran")
    return write_outputs(result, params, index=0, with_hdf5=True)


def cmd_params(args: argparse.Namespace) -> int:
    rows = [r for r in param_table() if args.all or args.json or not _advanced(r["path"])]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    group = None
    for row in rows:
        if row["group"] != group:
            group = row["group"]
            print(f"\n{GROUP_TITLES[group]}")
        unit = f" [{row['unit']}]" if row["unit"] else ""
        note = " (no effect; accepted for compatibility)" if row["no_effect"] else ""
        print(f"  -{row['flag']:<18} default {row['default']:<18}{unit:<14} {row['hint']}{note}")
    if not args.all:
        print("\n(advanced parameters hidden; ptychopy params --all lists them)")
    return 0


def _advanced(path: str) -> bool:
    from reconstruction.parameters import spec_for_path

    return spec_for_path(path).advanced


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.terminal:
        try:
            serve = registered(COMMANDS_GROUP, "serve")
        except ImportError:
            serve = None
        if serve is not None:
            return int(serve(["--demo", "--port", str(args.port)]) or 0)
    print("ptychopy terminal demo: a simulated scan reconstructed with LSQML")
    print(f"  {DEMO_CMDSTR}")
    params = Parameters.from_cmdstr(DEMO_CMDSTR).replace({"output.output_dir": "var/demo"})
    for path in run_with_progress(params):
        print(f"wrote {path}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from reconstruction.io import Scan, inspect
    from reconstruction.io.scan_metadata import describe_metadata

    params = Parameters.from_cmdstr(args.cmdstr)
    scan = Scan.from_parameters(params)
    info = inspect(scan)
    for key, value in vars(info).items():
        if hasattr(value, "shape") and getattr(value, "ndim", 0) >= 2:
            value = f"array {value.shape} {value.dtype}"
        print(f"{key:>22}: {value}")
    if scan.metadata is not None:
        print(f"{'layout':>22}: {scan.metadata.layout}")
        for line in describe_metadata(scan.metadata):
            name, _, text = line.partition(": ")
            print(f"{name:>22}: {text}")
    if params.experiment.positions_file.lower().endswith(".mda"):
        from reconstruction.io.mda import describe_mda, read_mda

        for line in describe_mda(read_mda(params.experiment.positions_file)):
            print(f"{'mda':>22}: {line}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from reconstruction.compare import FRC_THRESHOLD, compare_results
    from reconstruction.io import read_result

    threshold = FRC_THRESHOLD if args.threshold is None else args.threshold
    try:
        found = compare_results(read_result(args.a), read_result(args.b), threshold)
    except ValueError as exc:
        print(f"ptychopy compare: {exc}", file=sys.stderr)
        return 2
    dy, dx = found.alignment.shift_px
    frc = found.frc
    print(f"shift of B onto A: {dy:+.3f}, {dx:+.3f} px (rows, cols); global phase {found.alignment.phase_rad:+.4f} rad")
    print(f"FRC resolution (half period, threshold {threshold:.3g}): {frc.resolution_m * 1e9:.1f} nm "
          f"(pixel {frc.pixel_m * 1e9:.2f} nm, {len(frc.frc)} rings)")
    print(f"relative difference after alignment: {found.relative_difference:.4f}")
    if args.csv:
        with open(args.csv, "w") as out:
            out.write("frequency_per_m,frc\n")
            out.writelines(f"{q:.6g},{v:.6f}\n" for q, v in zip(frc.frequency_per_m, frc.frc, strict=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
