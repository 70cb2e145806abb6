"""Static files as a deployment serves them: collected with hashed names, compressed, cached
for good. The tests elsewhere serve them uncollected (settings.STATIC_COLLECTED off)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import brotli
import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

COLLECTED = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
FOREVER = "max-age=315360000, public, immutable"


@pytest.fixture
def collected(tmp_path):
    """The app's static files (and htmx) collected the way `collabmask start` and the image do;
    the large third-party bundles are left out to keep the test quick."""
    root = tmp_path / "static"
    with override_settings(STATIC_ROOT=root, STORAGES=COLLECTED):
        call_command(
            "collectstatic",
            "--noinput",
            "-v0",
            *("-i", "admin", "-i", "rest_framework", "-i", "drf_spectacular_sidecar"),
        )
        yield root


def test_collected_static_files_are_served_compressed_and_cached_for_good(collected):
    client = Client()
    page = client.get("/accounts/login/").content.decode()
    # Pages name the hashed files: a new version is a new URL, so the old one may be kept forever.
    scripts = re.findall(r'src="(/static/[^"]+\.js)"', page)
    styles = re.findall(r'href="(/static/[^"]+\.css)"', page)
    htmx = next(url for url in scripts if "htmx" in url)
    assert re.search(r"\.[0-9a-f]{12}\.js$", htmx), htmx
    assert styles and all(re.search(r"\.[0-9a-f]{12}\.css$", url) for url in styles)
    plain_name = re.sub(r"\.[0-9a-f]{12}(\.js)$", r"\1", htmx.removeprefix("/static/"))
    original = Path(finders.find(plain_name)).read_bytes()

    br = client.get(htmx, HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert br.status_code == 200 and br["Content-Encoding"] == "br"
    assert br["Cache-Control"] == FOREVER and "Accept-Encoding" in br["Vary"]
    body = b"".join(br.streaming_content)
    assert brotli.decompress(body) == original and len(body) < len(original) / 2

    gz = client.get(htmx, HTTP_ACCEPT_ENCODING="gzip")
    assert gz["Content-Encoding"] == "gzip" and gz["Cache-Control"] == FOREVER
    assert gzip.decompress(b"".join(gz.streaming_content)) == original

    identity = client.get(htmx)
    assert not identity.has_header("Content-Encoding")
    assert b"".join(identity.streaming_content) == original

    for url in styles:
        answer = client.get(url, HTTP_ACCEPT_ENCODING="br")
        assert answer["Content-Encoding"] == "br" and answer["Cache-Control"] == FOREVER


def test_a_collection_compresses_only_hashed_names_and_skips_source_maps(collected):
    names = {p.relative_to(collected).as_posix() for p in collected.rglob("*") if p.is_file()}
    compressed = {n for n in names if n.endswith((".br", ".gz"))}
    assert compressed
    for name in compressed:
        assert re.search(r"\.[0-9a-f]{12}\.[a-z0-9]+\.(br|gz)$", name), name
        assert not name.endswith((".map.br", ".map.gz")), name
