"""The ``ptychopy`` command: run with progress, params table, errors with exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ptychopy.cli import main
from reconstruction.io import read_result

SMALL = "./ptycho -jobID=cli -simulate=1 -size=32 -scanDims=6,6 -step=150e-9,150e-9 -beamSize=500e-9 -i=4"


def test_run_writes_the_result_files_and_reports_the_error(tmp_path, capsys):
    assert main(["run", SMALL, "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "final error" in out and "cli.h5" in out
    res = read_result(tmp_path / "cli.h5")
    assert len(res.errors) == 4 and np.isfinite(res.errors).all()
    assert (tmp_path / "cli_object_0.csv").exists() and (tmp_path / "cli_probes_0.csv").exists()


def test_run_prints_the_run_plan_and_stores_it_in_the_result_file(tmp_path, capsys):
    assert main(["run", SMALL + " -device=cpu -algorithm=LSQML -RMS", "--out", str(tmp_path), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("run plan:"))
    assert lines[at] == "run plan: reference LSQML, data resident, one CPU"
    assert lines[at + 1] == ("  because: the CPU runs the NumPy reference engines; on the CPU the data stay in host "
                             "memory; one device; the run reports the mean of its iterates (span 5: the "
                             "mini-batches' jitter averaged out)")
    plan = read_result(tmp_path / "cli.h5").run_plan
    assert plan is not None and plan["implementation"] == "reference" and plan["options"] == ["rms_metric"]
    assert plan["implementation_reason"] == "the CPU runs the NumPy reference engines"
    assert plan["iterate_mean"] is True and "mean of its iterates" in plan["iterate_mean_reason"]


def test_run_shows_a_progress_bar_with_iteration_error_and_eta(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ptychopy", "run", SMALL, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4/4" in proc.stderr and "error=" in proc.stderr and "<00:00" in proc.stderr


def test_bad_parameter_exits_2_with_a_suggestion(capsys):
    assert main(["run", "./ptycho -simulate=1 -sise=32"]) == 2
    assert "did you mean -size?" in capsys.readouterr().err


def test_missing_data_source_is_a_clear_error(capsys):
    assert main(["run", "./ptycho -size=32"]) == 1
    assert "-fp" in capsys.readouterr().err


def test_params_lists_every_flag_with_unit_and_default(capsys):
    assert main(["params", "--all"]) == 0
    out = capsys.readouterr().out
    for flag in ("-lambda", "-step", "-qxy", "-probeModes", "-PPS", "-delta_p"):
        assert flag in out
    assert main(["params", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"flag", "unit", "default", "hint"} <= set(rows[0])


def test_terminal_demo_runs_a_reconstruction(tmp_path, monkeypatch, capsys):
    import ptychopy.cli as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "DEMO_CMDSTR", SMALL.replace("-jobID=cli", "-jobID=demo"))
    assert main(["demo", "--terminal"]) == 0
    assert (tmp_path / "var" / "demo" / "demo.h5").exists()


def test_delegated_commands_reach_their_packages(capsys):
    # each delegated command's --help comes from the package that implements it
    for command, marker in (("serve", "--demo"), ("bridge", "--config"), ("simioc", "--port"),
                            ("export", "--format")):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert marker in capsys.readouterr().out, command


def test_run_splits_over_the_listed_gpus(tmp_path, monkeypatch):
    # two regions (NumPy "devices" here: no GPU), merged into one object
    import reconstruction.multigpu as multigpu

    runs = []

    class Recorded(multigpu.SplitReconstruction):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            runs.append(self)

    monkeypatch.setattr(multigpu, "SplitReconstruction", Recorded)
    cmd = SMALL.replace("-i=4", "-i=3 -algorithm=DM -gpus=0,1 -overlap=8 -device=cpu")
    assert main(["run", cmd, "--out", str(tmp_path), "--quiet"]) == 0
    (run,) = runs
    assert run.devices == [0, 1] and len(run.regions) == 2 and run.iteration == 3
    res = read_result(tmp_path / "cli.h5")
    assert len(res.errors) == 3 and res.object.shape == run.object_shape
    assert res.parameters.multigpu.gpus == "0,1"
    assert res.run_plan["split"] is True and res.run_plan["devices"] == [0, 1] and res.run_plan["exchange"] == "sums"


def test_serve_hands_the_web_server_a_bridge_factory_that_checks_the_config_first(monkeypatch, tmp_path):
    import webapp.cli

    seen = {}

    def fake_main(argv, startup_hooks=(), bridge_factory=None):
        seen["argv"], seen["factory"] = argv, bridge_factory
        return 0

    monkeypatch.setattr(webapp.cli, "main", fake_main)
    assert main(["serve", "--port", "8123", "--bridge", "beamline.toml", "--no-browser"]) == 0
    assert seen["argv"] == ["serve", "--port", "8123", "--bridge", "beamline.toml", "--no-browser"]
    with pytest.raises(webapp.cli.StartupError, match=r"^--bridge: .*missing\.toml: cannot read the configuration"):
        seen["factory"](str(tmp_path / "missing.toml"))
    hook = seen["factory"]("epics_bridge/examples/beamline.toml")
    assert callable(hook)

def test_running_out_of_host_memory_is_a_clear_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    import ptychopy.cli as cli

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 64.0 GiB for an array with shape (4096, 2048, 2048)")

    monkeypatch.setattr(cli, "run_with_progress", exhausted)
    assert main(["run", SMALL, "--out", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "out of host memory" in err and "64.0 GiB" in err and "Traceback" not in err


def test_a_repeated_flag_or_hostile_job_id_exits_2_naming_the_flag(tmp_path, capsys):
    assert main(["run", SMALL + " -i=9", "--out", str(tmp_path), "--quiet"]) == 2
    assert "-i is given twice" in capsys.readouterr().err
    assert main(["run", SMALL.replace("-jobID=cli", "-jobID=../../pwn"), "--out", str(tmp_path), "--quiet"]) == 2
    assert "-jobID=" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent.parent / "pwn.h5").exists()
