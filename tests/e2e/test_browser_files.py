"""A result file in the browser: h5web (built from npm into our static files) over our h5grove endpoints opens a
finished job's result on its object image; a path outside the roots is refused. Checked by structure: h5web's
image visualisation, its canvas and axes, the h5grove answers it asked for, no failed request."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import log_in
from tests.e2e.test_browser_job_page import shot
from tests.support.stack import ProductionStack, User, small_sim_cmdstr
from tests.support.web import ApiClient

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(240)]


def test_a_result_file_opens_in_h5web_on_the_object_image(  # type: ignore[no-untyped-def]
        page, prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    job = api.submit(small_sim_cmdstr(10, size=32, scan=4, job_id="h5web"), label="h5web")
    assert api.wait_status(job["id"], {"done", "failed", "cancelled"}, 90)["status"] == "done"
    pg = page
    answers: list[tuple[int, str]] = []
    pg.on("response", lambda r: answers.append((r.status, r.url)) if "/files/h5grove/" in r.url else None)
    log_in(pg, alice)
    pg.goto(f"/jobs/{job['id']}/")
    pg.locator("#view-result").click()
    pg.wait_for_url(lambda url: "/files/view/?file=" in url)
    root = pg.locator("#h5web-root")
    root.get_by_text("NX Heatmap").first.wait_for(timeout=60000)  # h5web's NXdata image, from the file's default
    root.locator("canvas").first.wait_for(timeout=30000)
    assert root.get_by_text("data_1").count() >= 1  # the breadcrumb / tree at the object's NXdata
    assert root.get_by_text("Failed").count() == 0 and root.get_by_text("Error").count() == 0
    assert root.get_by_text("object phase").count() >= 1  # the plot's title from the file
    box = root.locator("canvas").first.bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > 150
    assert any(status == 200 and "/files/h5grove/data" in url for status, url in answers), answers
    assert all(status == 200 for status, _ in answers), answers
    shot(pg, "h5web", "#h5web-root")
    # outside the roots: refused with the reason, no viewer
    pg.goto("/files/view/?file=/etc/passwd")
    assert "is outside the data folders" in (pg.locator("#file-error").text_content() or "")
    assert pg.locator("#h5web-root").count() == 0
