"""The export job: claimed once, progress on the Job, cancellation, failures, a real worker."""

from __future__ import annotations

import pytest
from django.db import transaction

from annotation.models import GroundTruth, Job
from annotation.services.exports import export_request
from annotation.services.jobs import job_cancel
from annotation.storage import blob_read, stored_paths
from annotation.worker.tasks.data import export_build_task
from tests.annotation.exporting import provenance_scenario, read_zip
from tests.support import Message, wait_for_job


@pytest.mark.django_db
def test_the_task_builds_the_export_and_records_progress_and_result(tmp_path):
    scenario = provenance_scenario(tmp_path)
    export = export_request(
        dataset=scenario.dataset, created_by=scenario.users["md1"], enqueue=False
    )

    assert export_build_task.apply(args=[export.job_id]).get() == "succeeded"

    export.refresh_from_db()
    job = Job.objects.get(pk=export.job_id)
    assert job.state == "succeeded" and job.progress == 1.0 and job.attempts == 1
    assert job.progress_detail == {"cases_done": 4, "cases_total": 4}
    assert job.result["sha256"] == export.sha256 and job.result["n_cases"] == 4
    assert read_zip(blob_read(export.file.name)).testzip() is None


@pytest.mark.django_db
def test_a_second_delivery_of_the_message_does_nothing(tmp_path):
    scenario = provenance_scenario(tmp_path)
    export = export_request(dataset=scenario.dataset, created_by=None, enqueue=False)
    export_build_task.apply(args=[export.job_id])
    export.refresh_from_db()

    assert export_build_task.apply(args=[export.job_id]).get() == "skipped"
    assert stored_paths(top=["exports"]) == [export.file.name]
    assert Job.objects.get(pk=export.job_id).attempts == 1


@pytest.mark.django_db
def test_a_job_cancelled_while_queued_builds_nothing(tmp_path):
    scenario = provenance_scenario(tmp_path)
    export = export_request(dataset=scenario.dataset, created_by=None, enqueue=False)
    job_cancel(job=export.job)

    export_build_task.apply(args=[export.job_id])
    export.refresh_from_db()
    assert export.job.state == "cancelled" and not export.file
    assert stored_paths(top=["exports"]) == []


@pytest.mark.django_db
def test_a_build_that_cannot_be_made_fails_with_the_reason(tmp_path):
    scenario = provenance_scenario(tmp_path)
    export = export_request(dataset=scenario.dataset, created_by=None, enqueue=False)
    GroundTruth.objects.all().delete()  # the accepted masks went away before the job ran

    assert export_build_task.apply(args=[export.job_id]).get() == "failed"
    job = Job.objects.get(pk=export.job_id)
    assert "nothing to export" in job.error.strip().splitlines()[-1]
    assert stored_paths(top=["exports"]) == []


@pytest.mark.django_db
def test_the_job_is_sent_once_the_request_commits(
    tmp_path, django_capture_on_commit_callbacks, broker
):
    scenario = provenance_scenario(tmp_path)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        export = export_request(dataset=scenario.dataset, created_by=None)
        assert broker.messages == []
    assert len(callbacks) == 1
    # Routed like every job: the export task, on the CPU workers' queue.
    assert broker.messages == [Message("annotation.worker.export_job", export.job_id, "default")]


@pytest.mark.django_db
def test_an_export_run_in_process_sends_no_message(
    tmp_path, django_capture_on_commit_callbacks, broker
):
    scenario = provenance_scenario(tmp_path)
    with django_capture_on_commit_callbacks(execute=True):
        export = export_request(dataset=scenario.dataset, created_by=None, enqueue=False)
    assert broker.messages == [] and export.job.state == "queued"


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_worker_builds_a_requested_export(worker_process, tmp_path):
    scenario = provenance_scenario(tmp_path)
    with transaction.atomic():
        export = export_request(dataset=scenario.dataset, created_by=scenario.users["md1"])

    job = wait_for_job(export.job, worker=worker_process, timeout=90)
    assert job.state == "succeeded", job.error or worker_process.log_path.read_text()
    assert job.worker.startswith(worker_process.hostname)
    export.refresh_from_db()
    archive = read_zip(blob_read(export.file.name))
    assert "Images/a.png" in archive.namelist() and export.n_cases == 4
