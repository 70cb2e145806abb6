from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests
# make beside it are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("COLLABMASK_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ARTIFACTS = Path(os.environ.get("COLLABMASK_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))


@pytest.fixture
def shared_data() -> Path:
    """The real CXRs and masks beside the clone (CI has them; a user's clone may not)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set COLLABMASK_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def artifacts_dir(request) -> Path:
    """Where a test leaves screenshots and figures for people to look at."""
    path = ARTIFACTS / request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


_DJANGO_FIXTURES = {"db", "transactional_db", "live_server", "settings", "client", "admin_client"}


@pytest.fixture(autouse=True)
def _isolated_media(request, tmp_path_factory):
    """Every Django test writes media into its own folder, never into var/."""
    if not (
        request.node.get_closest_marker("django_db") or _DJANGO_FIXTURES & set(request.fixturenames)
    ):
        yield None
        return
    settings = request.getfixturevalue("settings")
    media = tmp_path_factory.mktemp("media")
    settings.MEDIA_ROOT = media
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media)},
        },
    }
    yield media
