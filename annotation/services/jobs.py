"""Jobs: units of worker work, each run at most once at a time.

A Job row is the truth about a unit of work; the Celery message only says "look at job N".
Claiming is a conditional update (queued → running), so a redelivered or duplicated message
finds nothing to do. A worker that dies leaves its job "running" with a stale heartbeat:
`job_requeue_stale` puts it back in the queue and the next run resumes from its checkpoint.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import current_app
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from annotation.models import Dataset, Job, Stage
from annotation.services.audit import audit_record

log = logging.getLogger(__name__)

# Which Celery task runs a kind of job, and on which queue. Sent by name: the web process
# must not import the worker modules (they load Keras).
TASKS: dict[str, tuple[str, str]] = {
    Job.Kind.TRAIN: ("annotation.worker.train_job", "gpu"),
    Job.Kind.PREDICT: ("annotation.worker.predict_job", "gpu"),
    Job.Kind.DETECTOR: ("annotation.worker.detector_job", "gpu"),
    Job.Kind.CLASSIFIER: ("annotation.worker.classifier_job", "gpu"),
    Job.Kind.ENSEMBLE: ("annotation.worker.ensemble_job", "gpu"),
    Job.Kind.INTERACTIVE: ("annotation.worker.interactive_job", "gpu"),
    # One CXR through a trained network takes well under a second on a CPU, and a GPU worker
    # may be busy training for hours: live inference goes to the CPU workers' queue.
    Job.Kind.INFER: ("annotation.worker.infer_job", "default"),
    Job.Kind.IMPORT: ("annotation.worker.import_job", "default"),
    Job.Kind.EXPORT: ("annotation.worker.export_job", "default"),
}
LOG_TAIL_CHARS = 20_000
# A running job whose worker has not reported for this long is presumed dead.
STALE_AFTER = timedelta(minutes=5)


class JobStateError(Exception):
    """The job is not in a state that allows the action."""


def _send(job: Job) -> None:
    # The project's Celery app (config.celery_app) is the current one once Django is set up.
    name, queue = TASKS[job.kind]
    current_app.send_task(name, args=[job.pk], queue=queue)


def job_enqueue(
    *,
    kind: str,
    params: dict[str, Any] | None = None,
    dataset: Dataset | None = None,
    stage: Stage | None = None,
    created_by: AbstractBaseUser | None = None,
    send: bool = True,
) -> Job:
    """Create a queued job; its message is sent once the surrounding transaction commits.

    With send=False no message goes out: the caller claims and runs the job in-process
    (`manage.py export_dataset`, say)."""
    if kind not in TASKS:
        raise ValueError(f"unknown job kind {kind!r}")
    job = Job.objects.create(
        kind=kind, params=params or {}, dataset=dataset, stage=stage, created_by=created_by
    )
    if send:
        transaction.on_commit(lambda: _send(job))
    return job


def job_claim(*, job_id: int, worker: str) -> Job | None:
    """Take a queued job for this worker; None if it is not queued (done, running elsewhere,
    cancelled). A job cancelled while queued is closed here instead of run."""
    now = timezone.now()
    Job.objects.filter(id=job_id, state=Job.State.QUEUED, cancel_requested=True).update(
        state=Job.State.CANCELLED, finished_at=now
    )
    claimed = Job.objects.filter(id=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING,
        worker=worker,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        error="",
        attempts=F("attempts") + 1,
    )
    return Job.objects.get(id=job_id) if claimed == 1 else None


def job_reclaim(*, job_id: int, dead_worker: str, worker: str) -> Job | None:
    """Take over a job still marked running by a worker process known to be dead."""
    claimed = Job.objects.filter(id=job_id, state=Job.State.RUNNING, worker=dead_worker).update(
        worker=worker, heartbeat_at=timezone.now(), attempts=F("attempts") + 1
    )
    return Job.objects.get(id=job_id) if claimed == 1 else None


def job_progress(
    *,
    job_id: int,
    progress: float | None = None,
    detail: dict[str, Any] | None = None,
    log_line: str | None = None,
) -> bool:
    """Record progress of a running job. Returns True when the job should stop (cancel asked)."""
    job = Job.objects.only("state", "cancel_requested", "log", "progress_detail").get(id=job_id)
    if job.state != Job.State.RUNNING:
        return True
    fields: dict[str, Any] = {"heartbeat_at": timezone.now()}
    if progress is not None:
        fields["progress"] = min(max(float(progress), 0.0), 1.0)
    if detail is not None:
        fields["progress_detail"] = {**job.progress_detail, **detail}
    if log_line:
        fields["log"] = (job.log + log_line.rstrip("\n") + "\n")[-LOG_TAIL_CHARS:]
    Job.objects.filter(id=job_id, state=Job.State.RUNNING).update(**fields)
    return job.cancel_requested


def job_succeed(*, job_id: int, result: dict[str, Any] | None = None) -> bool:
    return (
        Job.objects.filter(id=job_id, state=Job.State.RUNNING).update(
            state=Job.State.SUCCEEDED,
            progress=1.0,
            result=result or {},
            finished_at=timezone.now(),
        )
        == 1
    )


def job_fail(*, job_id: int, error: str, result: dict[str, Any] | None = None) -> bool:
    fields: dict[str, Any] = {"result": result} if result is not None else {}
    return (
        Job.objects.filter(id=job_id, state=Job.State.RUNNING).update(
            state=Job.State.FAILED,
            error=error[-LOG_TAIL_CHARS:],
            finished_at=timezone.now(),
            **fields,
        )
        == 1
    )


def job_mark_cancelled(*, job_id: int) -> bool:
    return (
        Job.objects.filter(id=job_id, state=Job.State.RUNNING).update(
            state=Job.State.CANCELLED, finished_at=timezone.now()
        )
        == 1
    )


def _request_cancel(job: Job) -> None:
    now = timezone.now()
    Job.objects.filter(id=job.pk, state=Job.State.QUEUED).update(
        state=Job.State.CANCELLED, cancel_requested=True, finished_at=now
    )
    Job.objects.filter(id=job.pk, state=Job.State.RUNNING).update(cancel_requested=True)


def job_cancel(
    *, job: Job, by: AbstractBaseUser | None = None, client_ip: str | None = None
) -> Job:
    """Queued jobs stop at once; running ones at their next progress report."""
    if job.state in (Job.State.SUCCEEDED, Job.State.FAILED, Job.State.CANCELLED):
        raise JobStateError(f"job #{job.pk} is already {job.get_state_display().lower()}")
    old = job.state
    with transaction.atomic():
        _request_cancel(job)
        job.refresh_from_db()
        audit_record(
            action="job.cancel",
            actor=by,
            ip=client_ip,
            target=job,
            dataset=job.dataset_id,
            old={"state": old, "cancel_requested": False},
            new={"state": job.state, "cancel_requested": True},
        )
    log.info("job %s: cancel asked by %s", job.pk, getattr(by, "username", "system"))
    return job


def stage_jobs_cancel(*, stage: Stage) -> list[int]:
    """Cancel a stage's queued and running jobs (the stage's own cancel is what is audited)."""
    ids = []
    for job in stage.jobs.filter(state__in=(Job.State.QUEUED, Job.State.RUNNING)):
        _request_cancel(job)
        ids.append(job.pk)
    return ids


@transaction.atomic
def job_retry(*, job: Job, by: AbstractBaseUser | None = None, client_ip: str | None = None) -> Job:
    """Queue a failed or cancelled job again; training resumes from its last checkpoint."""
    if job.kind == Job.Kind.IMPORT and job.result:
        # An upload is removed once its import ran to the end: nothing is left to import.
        raise JobStateError(
            f"job #{job.pk} ran to its end and its upload is gone: upload the files again"
        )
    old = Job.objects.filter(pk=job.pk).values_list("state", flat=True).first()
    updated = Job.objects.filter(
        id=job.pk, state__in=(Job.State.FAILED, Job.State.CANCELLED)
    ).update(state=Job.State.QUEUED, cancel_requested=False, error="", finished_at=None)
    if updated != 1:
        job.refresh_from_db()
        raise JobStateError(
            f"only failed or cancelled jobs can be retried; job #{job.pk} is {job.state}"
        )
    job.refresh_from_db()
    audit_record(
        action="job.retry",
        actor=by,
        ip=client_ip,
        target=job,
        dataset=job.dataset_id,
        old={"state": old},
        new={"state": job.state},
    )
    transaction.on_commit(lambda: _send(job))
    log.info("job %s: retried by %s", job.pk, getattr(by, "username", "system"))
    return job


@transaction.atomic
def job_requeue_stale(
    *, dead_workers: list[str] | None = None, stale_after: timedelta = STALE_AFTER
) -> list[int]:
    """Put back in the queue the running jobs whose worker died: those of `dead_workers`
    (known dead, e.g. a restarted worker's previous processes), else those whose heartbeat
    is older than `stale_after`."""
    running = Job.objects.select_for_update(skip_locked=True).filter(state=Job.State.RUNNING)
    if dead_workers is not None:
        running = running.filter(worker__in=dead_workers)
    else:
        cutoff = timezone.now() - stale_after
        running = running.filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
    ids = list(running.values_list("id", flat=True))
    if not ids:
        return []
    Job.objects.filter(id__in=ids, state=Job.State.RUNNING).update(
        state=Job.State.QUEUED, worker="", heartbeat_at=None
    )
    for job in Job.objects.filter(id__in=ids):
        transaction.on_commit(lambda job=job: _send(job))
    log.warning("requeued jobs of a dead worker: %s", ids)
    return ids
