"""The worker side of a Job: claim it, run its body, report progress, end it once.

Every Celery task that does a Job's work calls `run_job`. The task itself only carries the
job id; the Job row says what to do and records what happened, so a message delivered twice,
a worker killed mid-way or a retry after a crash never runs the same work twice at once.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import traceback
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from annotation.models import Job
from annotation.services import jobs as job_services
from mlworker.extra import INSTALL_HINT, is_ml_import_error

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0
TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError)
MAX_TRANSIENT_RETRIES = 5


class JobCancelled(Exception):
    """Raised inside a job body when an admin asked the job to stop."""


class JobFailed(Exception):
    """Raised by a job body that ran to its end without doing its work: the job fails with
    this message (no traceback) and keeps `result` for its page."""

    def __init__(self, message: str, *, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message, self.result = message, result


class JobContext:
    """What a job body gets: its row, and throttled progress reporting with cancellation."""

    def __init__(self, job: Job):
        self.job = job
        self._last_report = 0.0
        self._cancel = False

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    def progress(
        self, fraction: float | None = None, *, force: bool = False, **detail: Any
    ) -> None:
        """Report progress (at most every few seconds unless forced); raise JobCancelled when
        the job should stop."""
        now = time.monotonic()
        if force or now - self._last_report >= PROGRESS_EVERY_S:
            self._last_report = now
            self._cancel = job_services.job_progress(
                job_id=self.job.pk, progress=fraction, detail=detail or None
            )
        if self._cancel:
            raise JobCancelled

    def should_cancel(self) -> bool:
        try:
            self.progress()
        except JobCancelled:
            return True
        return False

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job.pk, line)
        job_services.job_progress(job_id=self.job.pk, log_line=f"{timezone.now():%H:%M:%S} {line}")


def worker_identity(node_name: str) -> str:
    """`<celery node name>:<pid>`: which process runs a job, so its death can be detected."""
    return f"{node_name}:{os.getpid()}"


def _dead_here(worker: str, node_name: str) -> bool:
    """Whether `worker` names a process of this node that no longer exists."""
    node, _, pid = worker.rpartition(":")
    if node != node_name or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    """A killed process whose parent died too may linger unreaped: it runs nothing."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            # "pid (comm) state ...": comm may hold spaces, the state follows the last ')'.
            return handle.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def _claim(job_id: int, node_name: str) -> Job | None:
    me = worker_identity(node_name)
    job = job_services.job_claim(job_id=job_id, worker=me)
    if job is not None:
        return job
    current = Job.objects.filter(id=job_id).values_list("state", "worker").first()
    if current and current[0] == Job.State.RUNNING and _dead_here(current[1], node_name):
        # Our previous process died mid-job and the broker handed the message back.
        return job_services.job_reclaim(job_id=job_id, dead_worker=current[1], worker=me)
    return None


def run_job(task, job_id: int, body: Callable[[JobContext], dict[str, Any] | None]) -> str:
    """Claim the job, run `body`, and record how it ended. Returns the final state."""
    node_name = task.request.hostname or socket.gethostname()
    job = _claim(job_id, node_name)
    if job is None:
        log.info("job %s: nothing to do (not queued, or running elsewhere)", job_id)
        return "skipped"
    ctx = JobContext(job)
    try:
        result = body(ctx) or {}
    except JobCancelled:
        job_services.job_mark_cancelled(job_id=job_id)
        return Job.State.CANCELLED
    except JobFailed as exc:
        log.info("job %s failed: %s", job_id, exc.message.splitlines()[0])
        job_services.job_fail(job_id=job_id, error=exc.message, result=exc.result)
        return Job.State.FAILED
    except SoftTimeLimitExceeded:
        job_services.job_fail(job_id=job_id, error="stopped: the job ran past its time limit")
        return Job.State.FAILED
    except TRANSIENT as exc:
        retries = task.request.retries or 0
        if retries < MAX_TRANSIENT_RETRIES:
            # Hand the job back and try again later; the checkpoint makes the rerun cheap.
            Job.objects.filter(id=job_id, state=Job.State.RUNNING).update(
                state=Job.State.QUEUED, worker=""
            )
            log.warning("job %s: transient error, retry %s: %s", job_id, retries + 1, exc)
            raise task.retry(
                exc=exc, countdown=min(600, 10 * 2**retries), max_retries=MAX_TRANSIENT_RETRIES
            ) from exc
        job_services.job_fail(job_id=job_id, error="".join(traceback.format_exception(exc)))
        return Job.State.FAILED
    except Exception as exc:  # noqa: BLE001 - the job records every failure
        if is_ml_import_error(exc):
            # An installation without collabmask[ml]: say what to install, not a traceback.
            error = f"this worker cannot run {job.kind} jobs: {exc.name} is not installed; {INSTALL_HINT}"
            log.error("job %s: %s", job_id, error)
            job_services.job_fail(job_id=job_id, error=error)
            return Job.State.FAILED
        log.exception("job %s failed", job_id)
        job_services.job_fail(job_id=job_id, error="".join(traceback.format_exception(exc)))
        return Job.State.FAILED
    job_services.job_succeed(job_id=job_id, result=result)
    return Job.State.SUCCEEDED


def requeue_jobs_of_dead_processes(node_name: str) -> list[int]:
    """At worker start: jobs that a previous process of this node left running."""
    candidates = Job.objects.filter(
        state=Job.State.RUNNING, worker__startswith=f"{node_name}:"
    ).values_list("worker", flat=True)
    dead = sorted({w for w in candidates if _dead_here(w, node_name)})
    return job_services.job_requeue_stale(dead_workers=dead) if dead else []


@shared_task(name="annotation.worker.sweep", ignore_result=True)
def sweep() -> dict[str, Any]:
    """Periodic: jobs whose worker stopped reporting (a host that went away) run again, and
    stages whose jobs have all finished move on (in case a worker died between the two)."""
    from annotation.models import Stage
    from annotation.services.stages import stage_advance

    requeued = job_services.job_requeue_stale()
    advanced = {}
    for stage in Stage.objects.filter(status__in=(Stage.Status.TRAINING, Stage.Status.PREDICTING)):
        advanced[stage.pk] = stage_advance(stage=stage)
    return {"requeued": requeued, "stages": advanced}


def gpu_inventory() -> list[dict[str, Any]]:
    """The GPUs this machine has, from nvidia-smi (no ML framework import needed)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, _, memory = line.rpartition(",")
        gpus.append({"name": name.strip(), "memory_mb": int(memory.strip() or 0)})
    return gpus
