"""Static files: the live view loads Plotly's cartesian bundle; before ``collectstatic`` pages link plain names,
after it content-hashed names that WhiteNoise serves gzipped with a ten-year cache lifetime."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.templatetags.static import static
from django.test import RequestFactory
from whitenoise.middleware import WhiteNoiseMiddleware

from webapp.settings import FRONTEND_DIR

BUNDLE = "vendor/plotly-cartesian-2.min.js"


def test_the_plotly_bundle_is_the_cartesian_one_with_images_heatmaps_and_scatter() -> None:
    source = (FRONTEND_DIR / "static" / BUNDLE).read_bytes()
    assert b"plotly.js (cartesian - minified) v2." in source[:200]
    # the trace types the pages draw: live.js images and scatter, compare.js heatmaps
    assert b'name:"image"' in source and b'"heatmap"' in source and b'"scatter"' in source
    assert len(source) < 1_500_000 and len(gzip.compress(source, 9)) < 500_000


def test_before_collectstatic_a_page_links_the_plain_name(settings, tmp_path: Path) -> None:
    settings.STATIC_ROOT = tmp_path / "empty"
    assert static(BUNDLE) == f"/static/{BUNDLE}"


def test_after_collectstatic_hashed_names_served_gzipped_and_cached_for_years(settings, tmp_path: Path) -> None:
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", "--noinput", verbosity=0)
    url = static(BUNDLE)
    assert re.fullmatch(r"/static/vendor/plotly-cartesian-2\.min\.[0-9a-f]{12}\.js", url), url
    hashed = settings.STATIC_ROOT / url.removeprefix("/static/")
    assert hashed.read_bytes() == (FRONTEND_DIR / "static" / BUNDLE).read_bytes()
    assert Path(f"{hashed}.gz").stat().st_size < hashed.stat().st_size / 2.5

    serve = WhiteNoiseMiddleware(lambda request: pytest.fail(f"{request.path} not served as a static file"))
    response = serve(RequestFactory().get(url, HTTP_ACCEPT_ENCODING="gzip, br"))
    assert response.status_code == 200 and response["Content-Encoding"] == "gzip"
    assert "max-age=315360000" in response["Cache-Control"] and "immutable" in response["Cache-Control"]
    body = gzip.decompress(b"".join(response.streaming_content))
    assert body == hashed.read_bytes()
