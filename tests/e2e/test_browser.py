"""A real browser: Playwright for Python driving Debian's Chromium against the production stack.

Log in, submit a job through the form, watch the live plot update (the rendered image changes and the
iteration counter advances), find the job in the history, download the result. On failure a screenshot and the page's
HTML are kept under test-output/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support.processes import TEST_OUTPUT
from tests.support.stack import ProductionStack, User, small_sim_cmdstr

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(240)]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
LONG_ITERATIONS = 3000  # ~1 min at 64^2 on a CI core: the job (and its clone) runs while the page watches it


def log_in(pg, user: User) -> None:  # type: ignore[no-untyped-def]
    pg.goto("/accounts/login/")
    pg.fill("input[name=username]", user.username)
    pg.fill("input[name=password]", user.password)
    pg.locator("form button[type=submit], form input[type=submit]").first.click()
    pg.wait_for_url(lambda url: "/accounts/login/" not in url, timeout=15000)


def iteration_text(pg) -> str:  # type: ignore[no-untyped-def]
    loc = pg.locator("#st-iteration").first
    return (loc.text_content(timeout=5000) or "").strip()


def iteration_number(pg) -> int:  # type: ignore[no-untyped-def]
    m = re.search(r"\d+", iteration_text(pg))
    return int(m.group()) if m else -1


def test_login_submit_watch_history_download(page, prod_stack: ProductionStack, alice: User) -> None:  # type: ignore[no-untyped-def]
    pg = page
    log_in(pg, alice)

    pg.goto("/jobs/new/")
    box = pg.locator("textarea[name=cmdstr]").first
    if not box.is_visible():  # the command-string box sits in a closed <details>
        box.locator("xpath=ancestor::details/summary").first.click()
    box.fill(small_sim_cmdstr(LONG_ITERATIONS, job_id="browser"))  # still running while the page is watched
    label = pg.locator("input[name=label]")
    if label.count():
        label.first.fill("browser-e2e")
    box.locator("xpath=ancestor::form").locator("button[type=submit], input[type=submit]").first.click()
    pg.wait_for_url(re.compile(r"/jobs/\d+/$"), timeout=20000)
    job_id = int(re.search(r"/jobs/(\d+)/$", pg.url).group(1))  # type: ignore[union-attr]

    # The live view: wait for a running frame, then compare two moments.
    plot = pg.locator("#plot-object_amplitude").first
    plot.wait_for(state="visible", timeout=60000)
    deadline = time.monotonic() + 60
    while iteration_number(pg) < 1 and time.monotonic() < deadline:
        pg.wait_for_timeout(200)
    it1, shot1 = iteration_number(pg), plot.screenshot()
    assert it1 >= 1, f"the iteration counter never started: {iteration_text(pg)!r}"
    assert it1 < LONG_ITERATIONS, "the job ended before the live view showed it running"
    deadline = time.monotonic() + 30
    it2, shot2 = it1, shot1
    while (it2 <= it1 or shot2 == shot1) and time.monotonic() < deadline:
        pg.wait_for_timeout(700)
        it2, shot2 = iteration_number(pg), plot.screenshot()
    assert it2 > it1, f"the iteration counter did not advance from {it1}"
    assert shot2 != shot1, "the rendered plot did not change between two moments"
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(TEST_OUTPUT / "browser-live-view.png"), full_page=True)

    # Stop it through the API (a cancelled job keeps its last iterate), then the history and the download.
    from tests.support.web import ApiClient

    api = ApiClient(prod_stack.base_url, alice.token)
    assert api.post(f"/api/v1/jobs/{job_id}/cancel/").status in (200, 202)
    row = api.wait_status(job_id, {"done", "failed", "cancelled"}, 60)
    assert row["status"] == "cancelled", row
    pg.goto("/")
    link = pg.locator(f'a[href="/jobs/{job_id}/"]').first
    link.wait_for(timeout=10000)
    pg.screenshot(path=str(TEST_OUTPUT / "browser-history.png"), full_page=True)
    link.click()
    pg.wait_for_url(re.compile(rf"/jobs/{job_id}/$"))
    dl_link = pg.locator(f'a[href="/jobs/{job_id}/download/h5/"]').first
    with pg.expect_download(timeout=30000) as info:
        dl_link.click()
    path = info.value.path()
    assert Path(path).read_bytes()[:8] == HDF5_MAGIC, "the downloaded result is not an HDF5 file"

    # Clone it: the generated form comes back filled with the job's parameters and submits as it is; then
    # cancel the clone with the page's own (CSRF-protected) button.
    pg.locator(f'a[href="/jobs/{job_id}/clone/"], a:has-text("Clone")').first.click()
    pg.wait_for_url(re.compile(r"/(clone|new)/"), timeout=15000)
    pg.locator("form.job-form button[type=submit], form button[type=submit]:has-text('Submit')").first.click()
    pg.wait_for_url(re.compile(r"/jobs/\d+/$"), timeout=20000)
    clone_id = int(re.search(r"/jobs/(\d+)/$", pg.url).group(1))  # type: ignore[union-attr]
    assert clone_id != job_id
    clone = api.job(clone_id)
    assert clone["status"] in {"queued", "running"}, clone
    pg.on("dialog", lambda dialog: dialog.accept())  # a confirm() before cancelling is fine
    pg.locator("#cancel-form button[type=submit]").click()
    row = api.wait_status(clone_id, {"cancelled", "done", "failed"}, 60)
    assert row["status"] == "cancelled", row


def test_embedded_demo_is_live_in_the_browser(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The README's first experience: the demo login, the demo job already drawing when its page opens."""
    from tests.support.stack import EmbeddedServer

    server = EmbeddedServer("embedded-browser", tmp_path / "home")
    server.start()
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=server.base_url)
    pg = context.new_page()
    try:
        username, password = server.demo_login()
        pg.goto("/")
        pg.fill("input[name=username]", username)
        pg.fill("input[name=password]", password)
        pg.locator("form button[type=submit], form input[type=submit]").first.click()
        pg.wait_for_url(lambda url: "/accounts/login/" not in url, timeout=15000)
        pg.goto("/")
        hrefs = pg.eval_on_selector_all("a[href^='/jobs/']", "els => els.map(e => e.getAttribute('href'))")
        jobs = [h for h in hrefs if re.fullmatch(r"/jobs/\d+/", h)]
        assert jobs, f"no job linked from the history when the page first opens: {hrefs}"
        pg.locator(f'a[href="{jobs[-1]}"]').first.click()  # the oldest: the demo
        pg.wait_for_url(re.compile(r"/jobs/\d+/$"), timeout=15000)
        plot = pg.locator("#plot-object_amplitude").first
        plot.wait_for(state="visible", timeout=30000)
        deadline = time.monotonic() + 30
        while iteration_number(pg) < 1 and time.monotonic() < deadline:
            pg.wait_for_timeout(200)
        it1, shot1 = iteration_number(pg), plot.screenshot()
        it2, shot2 = it1, shot1
        deadline = time.monotonic() + 20
        while (it2 <= it1 or shot2 == shot1) and time.monotonic() < deadline:
            pg.wait_for_timeout(700)
            it2, shot2 = iteration_number(pg), plot.screenshot()
        assert it2 > it1 >= 1 and shot2 != shot1, f"the demo is not live in the browser ({it1} -> {it2})"
    except BaseException:
        TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(TEST_OUTPUT / "browser-failure-embedded.png"), full_page=True)
        raise
    finally:
        context.close()
        server.remove()


def test_a_job_that_refines_positions_and_fits_flux_shows_both_in_the_live_view(  # type: ignore[no-untyped-def]
        page, prod_stack: ProductionStack, alice: User) -> None:
    from tests.support.web import ApiClient

    api = ApiClient(prod_stack.base_url, alice.token)
    # 64^2, 10 x 10, a 24 px beam every 6 px: LSQML refining positions from iteration 2 and fitting each one's flux,
    # long enough to be watched while it runs
    job = api.submit(small_sim_cmdstr(400, job_id="pps", extra="-algorithm=LSQML -refinePositions -PPS=2 "
                                                                   "-variableIntensity -beamSize=5.4e-7"),
                     label="pps")
    job_id = job["id"]
    pg = page
    log_in(pg, alice)
    pg.goto(f"/jobs/{job_id}/")
    plot = pg.locator("#plot-positions")
    plot.wait_for(state="visible", timeout=90000)
    assert plot.get_attribute("data-points") == "100"
    deadline = time.monotonic() + 60
    while float(plot.get_attribute("data-max-moved-px") or 0) <= 0 and time.monotonic() < deadline:
        pg.wait_for_timeout(300)
    assert 0 < float(plot.get_attribute("data-max-moved-px") or 0) < 10
    # drawn by Plotly, one per position (the first trace; a second one rings the diffraction panel's position)
    assert pg.locator("#plot-positions .scatterlayer .trace").first.locator(".point").count() == 100
    flux = pg.locator("#plot-flux")
    assert flux.get_attribute("data-points") == "100"
    assert pg.locator("#plot-flux .scatterlayer .trace").first.locator(".point").count() == 100
    assert 0 < float(flux.get_attribute("data-flux-min") or 0) < float(flux.get_attribute("data-flux-max") or 0)
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(TEST_OUTPUT / "browser-positions.png"), full_page=True)
    assert api.post(f"/api/v1/jobs/{job_id}/cancel/").status in (200, 202)
    api.wait_status(job_id, {"done", "failed", "cancelled"}, 60)
