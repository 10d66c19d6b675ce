"""config.py, params.py and cli.py without EPICS: the example file, overrides, errors, parameter building."""

from __future__ import annotations

from pathlib import Path

import pytest

from epics_bridge.cli import main
from epics_bridge.config import ConfigError, config_from_dict, load_config
from epics_bridge.params import HC_KEV_M, describe_scan
from epics_bridge.trigger import Outcome, ScanEnd, ValueEvent

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "epics_bridge" / "examples" / "beamline.toml"


def base() -> dict:
    return {"bridge": {"beamline": "BL"}, "trigger": {"kind": "sscan", "busy_pv": "B"},
            "data": {"path_pv": "P", "name_pv": "N", "scan_number_pv": "S"}}


def test_example_config_loads_with_the_prefix_applied() -> None:
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.beamline == "SIM" and cfg.trigger.busy_pv == "ptysim:scan2.BUSY"
    assert cfg.metadata.step_m is not None and cfg.metadata.step_m[0].scale == 1e-6
    assert cfg.template.preprocessing.size_px == 64 and cfg.template.data.first_file_index == 1
    assert cfg.journal_path.resolve() == REPO / "var/epics_bridge/journal.sqlite3"
    assert "ptysim:HDF1:FileName" in cfg.pvs and len(cfg.pvs) == len(set(cfg.pvs))


def test_environment_overrides_any_key() -> None:
    env = {"EPICS_BRIDGE__BRIDGE__PV_PREFIX": "2idd:", "EPICS_BRIDGE__BRIDGE__DEBOUNCE_S": "2.5",
           "EPICS_BRIDGE__SUBMIT__SETTINGS_MODULE": "other.settings"}
    cfg = load_config(EXAMPLE, environ=env)
    assert cfg.trigger.busy_pv == "2idd:scan2.BUSY" and cfg.debounce_s == 2.5
    assert cfg.submit.settings_module == "other.settings"


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["trigger"].update(kind="motor"), "[trigger] kind: expected one of"),
    (lambda r: r["trigger"].pop("busy_pv"), "[trigger] busy_pv: required"),
    (lambda r: r["bridge"].update(debounce="1"), "[bridge] unknown key(s): debounce"),
    (lambda r: r["bridge"].update(heartbeat_s="x"), "[bridge] heartbeat_s: expected float"),
    (lambda r: r.update(parameters={"template": "-size=16 -sise=3"}), "did you mean -size"),
    (lambda r: r.update(metadata={"parameters": {"nope.x": "PV"}}), "not a parameter path"),
    (lambda r: r.update(submit={"kind": "callable", "target": "x"}), "'module:factory'"),
])
def test_errors_name_the_section_and_key(change, message: str) -> None:
    raw = base()
    change(raw)
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, source="bl.toml")
    assert message in str(err.value) and "bl.toml" in str(err.value)


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "b.toml"
    bad.write_text("[bridge\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", environ={})


def ev(pv: str, value, text: str | None = None) -> ValueEvent:
    return ValueEvent(pv, value, str(value) if text is None else text, 0.0)


def test_scan_description_from_pv_values() -> None:
    raw = base()
    raw["metadata"] = {"energy_kev": "E", "scan_dims": ["R", "C"], "step_m": {"pvs": ["SR", "SC"], "scale": 1e-6},
                       "detector_distance_m": {"pv": "Z", "scale": 1e-3},
                       "parameters": {"data.frames_per_file": "C", "reconstruction.algorithm": "ALG"}}
    raw["parameters"] = {"template": "./ptycho -size=32 -i=7 -fs=1"}
    cfg = config_from_dict(raw)
    latest = {e.pvname: e for e in (ev("P", None, "/data/run/"), ev("N", None, "scan12"), ev("S", 12),
                                     ev("E", 10.0), ev("R", 4), ev("C", 5), ev("SR", 0.5), ev("SC", -0.25),
                                     ev("Z", 1500.0), ev("ALG", "DM"))}
    info = describe_scan(cfg, latest, ScanEnd(Outcome.COMPLETE, "", 0.0))
    assert info.file_pattern == "/data/run/scan12_data_#06d.h5"
    assert info.dedup_key == "BL:12:/data/run/scan12_data_#06d.h5" and info.label == "BL scan 12"
    e = info.params.experiment
    assert e.wavelength_m == pytest.approx(HC_KEV_M / 10.0) and e.scan_dims == (4, 5)
    assert e.step_m == pytest.approx((0.5e-6, 0.25e-6)) and e.detector_distance_m == pytest.approx(1.5)
    assert e.job_id == "BL_scan12" and info.params.data.frames_per_file == 5
    assert info.params.reconstruction.algorithm == "DM" and info.params.reconstruction.iterations == 7
    assert info.warnings == ()


def test_missing_metadata_holds_the_scan_by_default_with_the_reason() -> None:
    raw = base()
    raw["metadata"] = {"energy_kev": "E"}
    raw["parameters"] = {"template": "-lambda=1e-10"}
    cfg = config_from_dict(raw)
    latest = {e.pvname: e for e in (ev("P", None, "/d"), ev("N", None, "s"), ev("S", 1), ev("E", float("nan")))}
    info = describe_scan(cfg, latest, ScanEnd(Outcome.COMPLETE, "", 0.0))
    assert info.held == ("E has no numeric value ('nan')",)
    assert info.provenance["experiment.wavelength_m"]["source"] == "held"


def test_a_disconnected_metadata_pv_holds_the_scan_even_with_a_stale_value() -> None:
    raw = base()
    raw["metadata"] = {"energy_kev": "E"}
    cfg = config_from_dict(raw)
    latest = {e.pvname: e for e in (ev("P", None, "/d"), ev("N", None, "s"), ev("S", 1), ev("E", 8.8))}
    info = describe_scan(cfg, latest, ScanEnd(Outcome.COMPLETE, "", 0.0, disconnected=("E",)))
    assert info.held == ("E was disconnected at the end of the scan",)


def test_an_out_of_range_energy_holds_the_scan_and_names_pv_value_and_range() -> None:
    raw = base()
    raw["metadata"] = {"energy_kev": "E", "detector_distance_m": {"pv": "Z", "scale": 1e-3}}
    cfg = config_from_dict(raw)
    latest = {e.pvname: e for e in (ev("P", None, "/d"), ev("N", None, "s"), ev("S", 1), ev("E", 0.001),
                                     ev("Z", 1900.0))}
    info = describe_scan(cfg, latest, ScanEnd(Outcome.COMPLETE, "", 0.0))
    (reason,) = info.held
    assert "experiment.wavelength_m = 1.23984e-06" in reason and "from E = 0.001 keV" in reason
    assert "outside its sane range [5e-12, 1.3e-08]" in reason
    assert info.provenance["experiment.detector_distance_m"] == dict(source="pv", pv="Z", value=pytest.approx(1.9),
                                                                     ioc_timestamp=0.0)


def test_with_hold_empty_a_bad_pv_falls_back_to_the_template_and_says_so() -> None:
    raw = base()
    raw["metadata"] = {"energy_kev": "E", "hold": []}
    raw["parameters"] = {"template": "-lambda=1e-10 -i=7"}
    cfg = config_from_dict(raw)
    latest = {e.pvname: e for e in (ev("P", None, "/d"), ev("N", None, "s"), ev("S", 1), ev("E", float("nan")))}
    info = describe_scan(cfg, latest, ScanEnd(Outcome.COMPLETE, "", 0.0))
    assert info.held == () and info.params.experiment.wavelength_m == 1e-10
    assert "E has no numeric value" in info.warnings[0] and "template's experiment.wavelength_m" in info.warnings[0]
    prov = info.provenance
    assert prov["experiment.wavelength_m"]["source"] == "template" and "E has no" in prov["experiment.wavelength_m"][
        "note"]
    assert prov["reconstruction.iterations"] == dict(source="template", value=7)
    assert prov["data.file_pattern"]["source"] == "pv"


def test_metadata_ranges_and_hold_are_validated() -> None:
    raw = base()
    raw["metadata"] = {"energy_kev": "E", "ranges": {"experiment.wavelength_m": [2, 1]}}
    with pytest.raises(ConfigError, match=r"\[metadata.ranges\] experiment.wavelength_m: expected \[min, max\]"):
        config_from_dict(raw)


def test_cli_check_lists_the_pvs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(EXAMPLE), "--check"]) == 0
    out = capsys.readouterr().out
    assert "ptysim:scan2.BUSY" in out and "sscan trigger" in out


def test_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[bridge]\nbeamline = ""\n')
    assert main(["--config", str(cfg)]) == 2
    assert "beamline: required" in capsys.readouterr().err
    assert main([]) == 2


def test_path_map_turns_ioc_paths_into_local_ones() -> None:
    from epics_bridge.params import map_path

    raw = base()
    raw["data"]["path_map"] = {"/gdata/2idd": "/data", "/gdata/2idd/special/": "/fast"}
    cfg = config_from_dict(raw)
    latest = {e.pvname: e for e in (ev("P", None, "/gdata/2idd/2026-3/"), ev("N", None, "s"), ev("S", 4))}
    info = describe_scan(cfg, latest, ScanEnd(Outcome.COMPLETE, "", 0.0))
    assert info.file_pattern == "/data/2026-3/s_data_#06d.h5" == info.params.data.file_pattern
    assert map_path("/gdata/2idd/special/x.h5", cfg.data.path_map) == "/fast/x.h5"
    assert map_path("/gdata/2iddX/x.h5", cfg.data.path_map) == "/gdata/2iddX/x.h5"  # whole components only


def _pva_stream(**stream: object) -> dict:
    return {**base(), "stream": {"enabled": True, "source": "pva://sim:Pva1:Image?scan=sim:Scan:", **stream}}


def test_buffer_clients_default_to_loopback_are_required_for_an_address_other_hosts_reach_and_checked_by_entry():
    """``[stream] buffer_clients``: the clients the bridge's frame buffer answers. Loopback by default (the default
    buffer_address is loopback: nothing else reaches it); a buffer_address other hosts reach needs them named
    (before: no such setting, the buffer answered any client)."""
    assert config_from_dict(_pva_stream()).stream.buffer_clients == ("127.0.0.0/8", "::1/128")
    given = config_from_dict(_pva_stream(buffer_address="10.2.0.7:5079", buffer_clients=["10.2.0.0/16", "10.3.4.5"]))
    assert given.stream.buffer_clients == ("10.2.0.0/16", "10.3.4.5/32")
    with pytest.raises(ConfigError, match=r"\[stream\] buffer_clients: the buffer is served on 10\.2\.0\.7:5079, which "
                                          r"other hosts reach, and answers only loopback clients .*list the "
                                          r"workers' addresses or networks"):
        config_from_dict(_pva_stream(buffer_address="10.2.0.7:5079"))
    assert config_from_dict(_pva_stream(buffer_address="localhost:5079")).stream.buffer_clients[0] == "127.0.0.0/8"
    assert config_from_dict(_pva_stream(buffer_address="10.2.0.7:5079", buffer_mib=0)).stream.buffered is False
    with pytest.raises(ConfigError, match=r"\[stream\] buffer_clients: 'workers\.example' is not an IP address or "
                                          r"network"):
        config_from_dict(_pva_stream(buffer_clients=["10.2.0.0/16", "workers.example"]))
    with pytest.raises(ConfigError, match=r"\[stream\] buffer_clients: expected a list of client addresses"):
        config_from_dict(_pva_stream(buffer_clients=[]))


class _NothingSubmitted:
    """A streaming bridge's submitter for a test that submits nothing."""

    def submit(self, request: object) -> str:
        raise AssertionError("nothing is submitted here")

    def job_state(self, job_id: str) -> None:
        return None


def test_the_bridge_starts_its_frame_buffer_with_the_configured_clients(tmp_path: Path) -> None:
    pytest.importorskip("p4p")
    from benchmarks.latency.procs import free_port
    from epics_bridge.bridge import Bridge

    raw = _pva_stream(buffer_address=f"127.0.0.1:{free_port()}", buffer_clients=["10.9.8.0/24"], buffer_mib=1)
    raw["bridge"].update(journal="j.sqlite3", state_file="state.json")
    cfg = config_from_dict(raw, base_dir=tmp_path)
    bridge = Bridge(cfg, submitter=_NothingSubmitted())
    try:
        bridge._start_frame_buffer()
        assert bridge.frame_buffer.refusal("127.0.0.1:5000").startswith(
            f"the bridge's frame buffer {cfg.stream.buffer_pv} refuses the client 127.0.0.1: not in [stream] "
            "buffer_clients (10.9.8.0/24)")
        assert bridge.frame_buffer.refusal("10.9.8.3:5000") == ""
    finally:
        if bridge.frame_buffer is not None:
            bridge.frame_buffer.stop()
        bridge.journal.close()
