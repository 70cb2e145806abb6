"""Celery tasks of the web side (CPU queue "default"). Thin: take ids, call one service.

The Job row is the truth about the work: `run_job` claims it with a conditional update (so a
redelivered message finds nothing to do), reports progress, honours cancellation and records
success or failure.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from annotation.models import Export
from annotation.services.exports import export_build
from annotation.services.uploads import import_upload_run
from annotation.worker.runner import JobContext, JobFailed, run_job


# Named as annotation.services.jobs.TASKS sends it, like every job task.
@shared_task(
    bind=True,
    name="annotation.worker.export_job",
    ignore_result=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 300,
)
def export_build_task(self, job_id: int) -> str:
    """Build the zip of the export whose job this is."""

    def body(ctx: JobContext) -> dict[str, Any]:
        export = Export.objects.select_related("dataset", "created_by").get(job_id=job_id)

        def progress(done: int, total: int) -> bool:
            # Throttled, except the last case; raises JobCancelled when an admin cancelled.
            ctx.progress(
                0.98 * done / total, force=done == total, cases_done=done, cases_total=total
            )
            return False

        return export_build(export=export, progress=progress)

    return run_job(self, job_id, body)


@shared_task(
    bind=True,
    name="annotation.worker.import_job",
    ignore_result=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 300,
)
def import_upload_task(self, job_id: int) -> str:
    """Import the CXRs an admin uploaded in the browser."""

    def body(ctx: JobContext) -> dict[str, Any]:
        def progress(done: int, total: int, where: str) -> None:
            ctx.progress(
                done / max(total, 1), force=done == total, phase="importing", done=done, total=total
            )

        report = import_upload_run(job=ctx.job, progress=progress)
        if report.nothing_imported:
            # Not a success: the job ends failed, saying why each file was refused.
            raise JobFailed(report.failure_message(), result=report.as_dict())
        return report.as_dict()

    return run_job(self, job_id, body)
