"""A real browser fills the new-job form from one file of a multi-file scan (10 files x 10 frames): the form
must get the #06d pattern, the first file number, the frames per file and a 10 x 10 grid, not one file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tests.e2e.test_browser import log_in
from tests.support.stack import ProductionStack, User

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.timeout(120)]


def test_fill_in_from_one_file_of_a_multi_file_scan(page, prod_stack: ProductionStack, alice: User) -> None:  # type: ignore[no-untyped-def]
    folder = prod_stack.data_root / "scan31"
    folder.mkdir(exist_ok=True)
    rows, cols = np.mgrid[0:64, 0:64]
    blob = (np.exp(-((rows - 30) ** 2 + (cols - 34) ** 2) / 20.0) * 1000).astype(np.float32)
    for k in range(1, 11):
        with h5py.File(folder / f"scan31_data_{k:06d}.h5", "w") as f:
            f.create_dataset("/entry/data/data", data=np.repeat(blob[None], 10, axis=0))
    log_in(page, alice)
    page.goto("/jobs/new/")
    page.fill("#id_scan", "scan31/scan31_data_000007.h5")
    page.get_by_role("button", name="Fill in from scan").click()
    page.wait_for_url(lambda url: "scan=" in url, timeout=15000)

    def value(name: str) -> str:
        return page.locator(f"[name={name}]").first.input_value()

    assert value("data__file_pattern") == str(folder / "scan31_data_#06d.h5")
    assert value("data__first_file_index") == "1" and value("data__frames_per_file") == "10"
    assert value("experiment__scan_dims").replace(" ", "") == "10,10"
    assert "10 files scan31_data_#06d.h5 from number 1, 100 frames in all" in page.content()
