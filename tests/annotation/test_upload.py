"""CXRs uploaded in the browser are imported by a real worker, as import_cxr would."""

from __future__ import annotations

import pytest

from annotation.models import Job
from tests.annotation.test_dashboard import _phantom_folder
from tests.factories import UserFactory
from tests.support import wait_for_job

pytestmark = [pytest.mark.django_db, pytest.mark.integration]


def _zip_of(folder) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def test_an_uploaded_zip_is_imported_by_a_worker(client, worker_process, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from annotation.models import Mask, Radiograph

    client.force_login(UserFactory(roles=["admin"]))
    archive = SimpleUploadedFile(
        "qata.zip", _zip_of(_phantom_folder(tmp_path)), content_type="application/zip"
    )
    response = client.post(
        "/dashboard/upload", {"new_dataset": "Hospital A", "label": "covid", "files": archive}
    )
    job = Job.objects.get(kind="import")
    assert response["Location"] == f"/dashboard/jobs/{job.pk}/"
    wait_for_job(job, worker=worker_process, timeout=120)
    assert job.state == "succeeded", job.error
    assert job.result["imported"] == 4 and job.result["rejected"] == []
    assert Radiograph.objects.filter(dataset__name="Hospital A").count() == 4
    assert Mask.objects.filter(kind="manual", radiograph__dataset__name="Hospital A").count() == 3
    # The upload itself is not kept once imported, nor its folder.
    from django.core.files.storage import default_storage

    assert not default_storage.exists(job.params["prefix"])
