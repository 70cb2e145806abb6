"""A job's page: what it did as tables, its times and log tail, refreshed while it runs."""

from __future__ import annotations

import pytest

from annotation.models import Dataset, Job, Stage
from annotation.services import jobs as job_services
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker")]


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(roles=["admin"]))
    return client


def test_an_import_result_is_a_table_not_json(admin_client):
    job = Job.objects.create(kind="import", params={"file_name": "scans.zip"})
    job_services.job_claim(job_id=job.pk, worker="w:1")
    result = {
        "dataset": "A", "dry_run": False, "imported": 3, "duplicates": 1, "masks_imported": 2,
        "mask_duplicates": 0, "skipped": 0,
        "rejected": [{"name": "upload/bad.png", "reason": "not a PNG, JPEG or DICOM file"}],
    }  # fmt: skip
    job_services.job_succeed(job_id=job.pk, result=result)
    html = admin_client.get(f"/dashboard/jobs/{job.pk}/").content.decode()
    assert '<th scope="row">Cases imported</th><td>3</td>' in html
    assert "Manual masks imported</th><td>2</td>" in html
    assert "<td>upload/bad.png</td><td>not a PNG, JPEG or DICOM file</td>" in html
    assert "{&#x27;" not in html and "{'" not in html  # no raw dict


def test_a_running_job_polls_and_a_finished_one_stops_polling(admin_client):
    job = Job.objects.create(kind="train", params={"network": {"arch": "unet", "encoder": "tiny"}})
    job_services.job_claim(job_id=job.pk, worker="w:1")
    job_services.job_progress(job_id=job.pk, log_line="epoch 1 loss 0.9")
    curve = [{"epoch": 1, "loss": 0.9, "val_loss": 0.95}]
    job_services.job_progress(job_id=job.pk, detail={"curve": curve})
    part = admin_client.get(f"/dashboard/jobs/{job.pk}/?part=progress", HTTP_HX_REQUEST="true")
    html = part.content.decode()
    assert "<h1>" not in html and 'hx-trigger="every 2s"' in html
    assert "epoch 1 loss 0.9" in html  # the log tail, without asking for it
    assert "<th>Validation loss</th>" in html and "<td>0.95</td>" in html
    job_services.job_succeed(job_id=job.pk, result={"epochs": 1})
    html = admin_client.get(
        f"/dashboard/jobs/{job.pk}/?part=progress", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "hx-trigger" not in html and "Succeeded" in html
    assert 'id="job-finished">—' not in html


def test_the_stage_fragment_updates_the_stage_header(admin_client):
    stage = Stage.objects.create(
        dataset=Dataset.objects.create(name="A"), number=1, mode="pairwise", status="training"
    )
    html = admin_client.get(
        f"/dashboard/stages/{stage.pk}/?part=jobs", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert 'id="stage-status" hx-swap-oob="true">Training<' in html
    full = admin_client.get(f"/dashboard/stages/{stage.pk}/").content.decode()
    assert full.count('id="stage-status"') == 1


def test_the_network_choices_are_plain_labelled_checkboxes(admin_client):
    dataset = Dataset.objects.create(name="A")
    html = admin_client.get(f"/dashboard/datasets/{dataset.pk}/stages/new").content.decode()
    assert 'value="unet/tiny"' in html
    assert "U-Net · Tiny (tests, demos)</label>" in html
