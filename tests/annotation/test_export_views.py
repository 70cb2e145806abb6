"""The exports page: choose, start, watch the progress bar (htmx), download with a role check."""

from __future__ import annotations

import pytest

from annotation.models import Export
from annotation.storage import blob_read
from annotation.worker.tasks.data import export_build_task
from tests.annotation.exporting import provenance_scenario, user
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def scenario(tmp_path):
    s = provenance_scenario(tmp_path)
    s.users["researcher"] = user("researcher", "researcher")
    return s


@pytest.fixture
def researcher_client(client, scenario):
    client.login(username="researcher", password=PASSWORD)
    return client


def test_the_page_offers_the_choices(researcher_client, scenario):
    page = researcher_client.get("/exports/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "QaTa-COV19 layout" in html and "COCO instances JSON" in html
    assert "k-fold split files" in html and "qata-small · Stage 2" in html
    assert "No export yet." in html


def test_starting_an_export_shows_its_progress_then_its_download(
    researcher_client, scenario, django_capture_on_commit_callbacks
):
    form = {
        "dataset": scenario.dataset.pk,
        "stages": [scenario.stages[2].pk],
        "formats": ["qata", "coco"],
        "split": "none",
        "folds": 5,
        "seed": 0,
    }
    with django_capture_on_commit_callbacks(execute=False) as sent:
        answer = researcher_client.post("/exports/", form)
    assert answer.status_code == 302 and len(sent) == 1
    export = Export.objects.get()
    assert export.params["stages"] == [2] and export.created_by == scenario.users["researcher"]
    assert export.params["include_imported"] is False  # an unticked box

    page = researcher_client.get("/exports/").content.decode()
    assert f"Export #{export.pk} started." in page and "<progress" in page
    assert f'hx-get="/exports/{export.pk}/row"' in page and "researcher" in page

    export_build_task.apply(args=[export.job_id])
    row = researcher_client.get(f"/exports/{export.pk}/row", HTTP_HX_REQUEST="true")
    html = row.content.decode()
    assert html.lstrip().startswith("<tr") and "<html" not in html  # just the row
    assert "hx-get" not in html and "<progress" not in html  # it stops polling
    assert f'href="/exports/{export.pk}/download"' in html and "Succeeded" in html

    download = researcher_client.get(f"/exports/{export.pk}/download")
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    export.refresh_from_db()
    assert b"".join(download.streaming_content) == blob_read(export.file.name)


def test_a_refused_export_says_why_and_starts_nothing(researcher_client, scenario):
    form = {"dataset": scenario.dataset.pk, "formats": ["qata"], "split": "stored", "folds": 5,
            "seed": 0}  # fmt: skip
    answer = researcher_client.post("/exports/", form)
    assert answer.status_code == 400
    assert "have no train/test split" in answer.content.decode()
    assert Export.objects.count() == 0


def test_a_failed_export_shows_the_reason(researcher_client, scenario):
    from annotation.models import GroundTruth
    from annotation.services.exports import export_request

    export = export_request(dataset=scenario.dataset, created_by=None, enqueue=False)
    GroundTruth.objects.all().delete()
    export_build_task.apply(args=[export.job_id])
    html = researcher_client.get("/exports/").content.decode()
    assert "Failed" in html and "nothing to export" in html and "Traceback" not in html


def test_a_download_is_not_ready_before_the_job_succeeds(researcher_client, scenario):
    from annotation.services.exports import export_request

    export = export_request(dataset=scenario.dataset, created_by=None, enqueue=False)
    assert researcher_client.get(f"/exports/{export.pk}/download").status_code == 404
