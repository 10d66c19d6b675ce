"""The API documentation page /api/docs/ in Chromium against the production stack (collected, hashed static files):
Swagger UI, served from our own static files, draws every operation of /api/v1/openapi.json; with a token entered
under Authorize, "Try it out" on listJobs gets the real answer (200). The page asks nothing of any other host."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from tests.support.processes import TEST_OUTPUT
from tests.support.stack import ProductionStack, User
from tests.support.web import WebClient

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(180)]


def test_the_api_page_draws_every_operation_and_tries_one_with_a_token(page, prod_stack: ProductionStack,
                                                                       alice: User) -> None:  # type: ignore[no-untyped-def]
    document = WebClient(prod_stack.base_url).get("/api/v1/openapi.json").json()
    expected = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    hosts: set[str] = set()
    page.on("request", lambda req: hosts.add(urllib.parse.urlsplit(req.url).netloc))

    page.goto("/api/docs/")
    page.locator(".opblock").first.wait_for(timeout=20000)
    assert page.locator(".info .title").first.text_content(timeout=5000).startswith("ptychopy API")
    shown = set()
    for block in page.locator(".opblock").all():
        method = (block.locator(".opblock-summary-method").text_content() or "").strip()
        path = (block.locator(".opblock-summary-path").get_attribute("data-path") or "").strip()
        shown.add((method, path))
    assert shown == expected, f"drawn {sorted(shown)}, documented {sorted(expected)}"
    assert any("vendor/swagger-ui/swagger-ui-bundle" in s for s in page.evaluate(
        "Array.from(document.scripts).map(s => s.src)")), "Swagger UI is not our static copy"

    page.locator("button.authorize").first.click()
    page.locator(".auth-container input").first.fill(f"Token {alice.token}")
    page.locator(".auth-btn-wrapper button.authorize").first.click()
    page.locator(".auth-btn-wrapper button.btn-done").first.click()
    listing = page.locator("#operations-default-listJobs")
    listing.locator(".opblock-summary").first.click()
    listing.locator("button.try-out__btn").first.click()
    listing.locator("button.execute").first.click()
    status = listing.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for(timeout=20000)
    assert status.text_content().strip() == "200"
    body = listing.locator(".live-responses-table tr.response .response-col_description pre").first.text_content()
    assert "results" in json.loads(body or "{}")
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(TEST_OUTPUT / "api-docs.png"), full_page=False)
    assert hosts == {urllib.parse.urlsplit(prod_stack.base_url).netloc}, f"the page asked other hosts: {hosts}"
