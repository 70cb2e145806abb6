"""An upload in which every file is refused ends as a failed import that says why."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.models import Dataset, Job, Radiograph
from annotation.services.jobs import JobStateError, job_retry
from annotation.services.uploads import import_upload_request, import_upload_run
from annotation.worker.tasks.data import import_upload_task
from tests.annotation.cxrfiles import png8

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker")]


def _upload(dataset, *files) -> Job:
    return import_upload_request(
        dataset=dataset,
        files=[(name, SimpleUploadedFile(name, data)) for name, data in files],
    )


def test_a_report_of_only_rejections_says_nothing_was_imported_and_why():
    dataset = Dataset.objects.create(name="A")
    job = _upload(dataset, ("broken.png", b"\x89PNG not really"), ("empty.jpg", b""))
    report = import_upload_run(job=job)
    assert report.nothing_imported
    message = report.failure_message()
    assert message.startswith("nothing imported: 2 files rejected")
    assert "broken.png" in message and "empty.jpg" in message
    assert Radiograph.objects.count() == 0


def test_a_report_with_one_good_file_is_not_a_failure():
    dataset = Dataset.objects.create(name="A")
    job = _upload(dataset, ("good.png", png8()), ("broken.png", b"\x89PNG not really"))
    report = import_upload_run(job=job)
    assert not report.nothing_imported and len(report.imported) == 1


def test_the_import_job_of_only_bad_files_fails_with_the_reasons_and_cannot_be_retried():
    dataset = Dataset.objects.create(name="A")
    job = _upload(dataset, ("broken.png", b"\x89PNG not really"), ("notes.txt", b"hello"))
    assert import_upload_task.apply(args=[job.pk]).get() == "failed"
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and job.finished_at is not None
    assert job.error.startswith("nothing imported: 1 file rejected")
    assert "broken.png" in job.error and "Traceback" not in job.error
    # The result keeps every rejection for the job page's table.
    assert [r["name"].rsplit("/", 1)[-1] for r in job.result["rejected"]] == ["broken.png"]
    assert job.result["imported"] == 0
    with pytest.raises(JobStateError, match="upload the files again"):
        job_retry(job=job)


def test_a_reimport_of_known_files_still_succeeds():
    dataset = Dataset.objects.create(name="A")
    import_upload_task.apply(args=[_upload(dataset, ("good.png", png8())).pk])
    again = _upload(dataset, ("good.png", png8()))
    assert import_upload_task.apply(args=[again.pk]).get() == "succeeded"
    again.refresh_from_db()
    assert again.result["duplicates"] == 1
