"""End to end: simioc -> bridge (its own process) -> submit_job -> Dramatiq worker process -> a finished job.

The production stack of the other tests (PostgreSQL + Redis + ``python -m webapp.worker``) with the bridge
submitting through ``webapp.jobs.services.submit_job`` (``DjangoSubmitter``) into the same database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_harness import BridgeProc, CaLoopback, SimIoc, bridge_config, wait_for

from tests.support.services import fresh_redis_url
from tests.support.stack import ProductionStack

pytestmark = [pytest.mark.epics, pytest.mark.services]


@pytest.fixture
def stack(postgres_server: Any, tmp_path: Path) -> Iterator[ProductionStack]:
    st = ProductionStack("epics", postgres_server.create_database("ptychopy_epics"), fresh_redis_url(),
                         tmp_path / "stack")
    try:
        st.setup()
        st.start_worker(0)
    except Exception as exc:
        st.stop()
        pytest.fail(f"could not start the production stack: {exc}\n{st.logs()}", pytrace=False)
    yield st
    st.stop()


def jobs(database_url: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return list(conn.execute(
            "SELECT id, status, source, dedup_key, label, message, parameters, provenance FROM jobs_job ORDER BY id"))


def bridge_status(database_url: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return list(conn.execute("SELECT beamline, state FROM jobs_bridgestatus"))


def test_simioc_scan_becomes_a_finished_job(ca: CaLoopback, stack: ProductionStack, tmp_path: Path) -> None:
    sim = SimIoc(ca, stack.data_root / "sim", tmp_path / "simioc.log")
    sim.first_start()
    # the stack's settings without PATH/PYTHONPATH or any CA setting: those come from this test's own IOC
    env = {k: v for k, v in stack.env.items() if k not in ("PATH", "PYTHONPATH") and not k.startswith("EPICS_")}
    bridge = BridgeProc(ca, bridge_config(tmp_path, tmp_path / "unused.jsonl", django=True, iterations=4),
                        tmp_path / "bridge.log", env=env)
    try:
        bridge.start()
        number = sim.play()
        url = stack.database_url

        def finished() -> list[dict[str, Any]]:
            rows = jobs(url)
            return rows if rows and rows[0]["status"] in ("done", "failed", "cancelled") else []

        try:
            rows = wait_for(finished, 120, "the bridge's job to finish", interval_s=0.5)
        except TimeoutError:
            raise AssertionError(f"{jobs(url)}\n{bridge.log()[-4000:]}\n{stack.logs()}") from None
        assert len(rows) == 1
        job = rows[0]
        assert job["status"] == "done", job["message"]
        assert job["source"] == "epics"
        pattern = str(sim.data_dir / f"scan{number}_data_#06d.h5")
        assert job["dedup_key"] == f"TEST:{number}:{pattern}"
        assert job["parameters"]["data"]["file_pattern"] == pattern
        assert bridge.state()["last_scan_queued"]["job_id"] == str(job["id"])
        # the bridge publishes its state to the shared database: the web dashboard shows it, at the latest with the
        # next heartbeat after the submission (0.5 s here; the publisher thread may still be setting Django up, or
        # retrying a failed report, when the job is already done on a loaded machine)
        def dashboard_shows_the_job() -> list[dict[str, Any]]:
            rows = bridge_status(url)
            queued = (rows[0]["state"] or {}).get("last_scan_queued") if len(rows) == 1 else None
            return rows if queued and queued.get("job_id") == str(job["id"]) else []

        try:
            status = wait_for(dashboard_shows_the_job, 15, "the dashboard to show the bridge's job", interval_s=0.2)
        except TimeoutError:
            raise AssertionError(f"{bridge_status(url)}\n{bridge.log()[-4000:]}") from None
        assert [row["beamline"] for row in status] == ["TEST"]
        # A restarted bridge replays every PV and finds the scan in its journal: still one job.
        bridge.kill()
        again = BridgeProc(ca, bridge.config, tmp_path / "bridge.log", env=env)
        again.start()
        wait_for(lambda: again.state()["counts"]["replays"] >= len(again.state()["pvs"]), 10, "the replays")
        assert len(jobs(url)) == 1
        again.stop()
    finally:
        bridge.stop()
        sim.stop()


def test_a_scan_whose_files_record_the_geometry_finishes_with_the_files_values(ca: CaLoopback, stack: ProductionStack,
                                                                              tmp_path: Path) -> None:
    """simioc --nxmx writes the geometry into the data files; a bridge configured with no energy or distance PV
    and no -dx_d submits through submit_job, and the worker finishes the job with the files' values, each
    recorded in the job's provenance as from the data file."""
    sim = SimIoc(ca, stack.data_root / "sim", tmp_path / "simioc.log", extra_args=["--nxmx"])
    sim.first_start()
    env = {k: v for k, v in stack.env.items() if k not in ("PATH", "PYTHONPATH") and not k.startswith("EPICS_")}
    config = bridge_config(tmp_path, tmp_path / "unused.jsonl", django=True, geometry_pvs=False,
                           template="./ptycho -size=32 -fs=1 -sqrtData -fftShiftData -beamSize=1e-6 -i=4")
    bridge = BridgeProc(ca, config, tmp_path / "bridge.log", env=env)
    try:
        bridge.start()
        energy_kev, distance_mm = float(sim.get("energy")), float(sim.get("detDistance"))
        sim.play()
        url = stack.database_url

        def finished() -> list[dict[str, Any]]:
            rows = jobs(url)
            return rows if rows and rows[0]["status"] in ("done", "failed", "cancelled") else []

        try:
            (job,) = wait_for(finished, 120, "the bridge's job to finish", interval_s=0.5)
        except TimeoutError:
            raise AssertionError(f"{jobs(url)}\n{bridge.log()[-4000:]}\n{stack.logs()}") from None
    finally:
        bridge.stop()
        sim.stop()
    assert job["status"] == "done", job["message"]
    e, p = job["parameters"]["experiment"], job["parameters"]["preprocessing"]
    assert e["wavelength_m"] == pytest.approx(12.398419843320026e-10 / energy_kev, rel=1e-9)
    assert e["detector_distance_m"] == pytest.approx(distance_mm * 1e-3)
    assert e["detector_pixel_m"] == pytest.approx(75e-6)
    assert p["crop_center_px"] == [16, 16]  # the beam centre the files record
    sources = {path: entry["source"] for path, entry in job["provenance"].items()}
    assert {path for path, source in sources.items() if source == "file"} == {
        "experiment.wavelength_m", "experiment.detector_distance_m", "experiment.detector_pixel_m",
        "preprocessing.crop_center_px", "preprocessing.bad_pixel_mask"}
