"""Jobs run once, report progress, stop when asked, and come back after a worker dies."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from celery.exceptions import Retry
from django.db import OperationalError, close_old_connections
from django.utils import timezone

from annotation.models import Job
from annotation.services import jobs as job_services
from annotation.worker import runner as jobrunner
from tests.support import Message, wait_for

pytestmark = pytest.mark.django_db


def _train_message(job: Job) -> Message:
    """The message that sends a training job to the GPU workers."""
    return Message("annotation.worker.train_job", job.pk, "gpu")


def _job(**fields) -> Job:
    return Job.objects.create(kind=Job.Kind.TRAIN, **fields)


def _task(hostname="gpu0@host", retries=0):
    def retry(exc=None, countdown=None, max_retries=None):
        return Retry(exc=exc, when=countdown)

    return SimpleNamespace(request=SimpleNamespace(hostname=hostname, retries=retries), retry=retry)


def test_enqueue_sends_the_message_only_after_commit(django_capture_on_commit_callbacks, broker):
    with django_capture_on_commit_callbacks(execute=True):
        job = job_services.job_enqueue(kind=Job.Kind.TRAIN, params={"epochs": 1})
        assert broker.messages == []
    assert broker.messages == [_train_message(job)]


def test_a_job_is_claimed_once():
    job = _job()
    assert job_services.job_claim(job_id=job.pk, worker="a:1") is not None
    assert job_services.job_claim(job_id=job.pk, worker="b:2") is None
    job.refresh_from_db()
    assert (job.state, job.worker, job.attempts) == ("running", "a:1", 1)


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_one_job_run_it_once():
    job = _job()
    winners = []
    barrier = threading.Barrier(4)

    def claim(name):
        barrier.wait()
        try:
            if job_services.job_claim(job_id=job.pk, worker=name) is not None:
                winners.append(name)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=claim, args=(f"w{i}:1",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_a_job_cancelled_while_queued_never_runs():
    job = _job()
    job_services.job_cancel(job=job)
    assert job_services.job_claim(job_id=job.pk, worker="a:1") is None
    job.refresh_from_db()
    assert job.state == "cancelled"


def test_a_running_job_hears_the_cancel_at_its_next_report():
    job = _job()
    job_services.job_claim(job_id=job.pk, worker="a:1")
    assert job_services.job_progress(job_id=job.pk, progress=0.3) is False
    job_services.job_cancel(job=job)
    assert job_services.job_progress(job_id=job.pk, progress=0.4) is True
    job.refresh_from_db()
    assert job.state == "running" and job.progress == pytest.approx(0.4)


def test_finished_jobs_cannot_be_cancelled_and_only_failed_ones_retried(broker):
    job = _job(state=Job.State.SUCCEEDED)
    with pytest.raises(job_services.JobStateError, match="already succeeded"):
        job_services.job_cancel(job=job)
    with pytest.raises(job_services.JobStateError, match="only failed or cancelled"):
        job_services.job_retry(job=job)
    assert broker.messages == []


def test_retry_requeues_a_failed_job(django_capture_on_commit_callbacks, broker):
    job = _job(state=Job.State.FAILED, error="boom", attempts=1)
    with django_capture_on_commit_callbacks(execute=True):
        job_services.job_retry(job=job)
    job.refresh_from_db()
    assert (job.state, job.error) == ("queued", "")
    assert broker.messages == [_train_message(job)]


def test_progress_keeps_a_bounded_log_tail():
    job = _job()
    job_services.job_claim(job_id=job.pk, worker="a:1")
    for i in range(3000):
        job_services.job_progress(job_id=job.pk, log_line=f"line {i:05d} " + "x" * 20)
    job.refresh_from_db()
    assert len(job.log) <= job_services.LOG_TAIL_CHARS
    assert job.log.rstrip().endswith("line 02999 " + "x" * 20)


def test_jobs_of_a_silent_worker_are_requeued(django_capture_on_commit_callbacks, broker):
    stale = _job(
        state=Job.State.RUNNING, worker="gone@h:1", heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    fresh = _job(state=Job.State.RUNNING, worker="alive@h:1", heartbeat_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        assert job_services.job_requeue_stale() == [stale.pk]
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.state, fresh.state) == ("queued", "running")
    assert broker.messages == [_train_message(stale)]


def test_a_restarted_worker_requeues_what_its_dead_process_left(broker):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine_dead = _job(
        state=Job.State.RUNNING, worker=f"gpu0@host:{dead.pid}", heartbeat_at=timezone.now()
    )
    mine_alive = _job(
        state=Job.State.RUNNING, worker=f"gpu0@host:{os.getpid()}", heartbeat_at=timezone.now()
    )
    other_host = _job(
        state=Job.State.RUNNING, worker=f"gpu1@other:{dead.pid}", heartbeat_at=timezone.now()
    )
    assert jobrunner.requeue_jobs_of_dead_processes("gpu0@host") == [mine_dead.pk]
    states = {j.pk: j.state for j in Job.objects.all()}
    assert states == {mine_dead.pk: "queued", mine_alive.pk: "running", other_host.pk: "running"}


def test_run_job_records_success_and_result():
    job = _job(params={"x": 2})
    state = jobrunner.run_job(_task(), job.pk, lambda ctx: {"double": ctx.params["x"] * 2})
    job.refresh_from_db()
    assert (state, job.state, job.result, job.progress) == (
        "succeeded",
        "succeeded",
        {"double": 4},
        1.0,
    )
    assert job.worker == f"gpu0@host:{os.getpid()}"


def test_run_job_does_nothing_for_a_job_already_running_elsewhere():
    job = _job(state=Job.State.RUNNING, worker=f"gpu1@other:{os.getpid()}")
    ran = []
    assert jobrunner.run_job(_task(), job.pk, lambda ctx: ran.append(1)) == "skipped"
    assert ran == []


def test_run_job_takes_over_from_its_own_dead_process():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job = _job(state=Job.State.RUNNING, worker=f"gpu0@host:{dead.pid}", attempts=1)
    assert jobrunner.run_job(_task(), job.pk, lambda ctx: {"resumed": True}) == "succeeded"
    job.refresh_from_db()
    assert (job.state, job.attempts, job.result) == ("succeeded", 2, {"resumed": True})


def test_a_failing_body_fails_the_job_with_its_traceback():
    job = _job()

    def body(ctx):
        raise ValueError("the masks are not binary")

    assert jobrunner.run_job(_task(), job.pk, body) == "failed"
    job.refresh_from_db()
    assert job.state == "failed"
    assert "ValueError: the masks are not binary" in job.error


def test_a_cancelled_body_ends_cancelled():
    job = _job()

    def body(ctx):
        job_services.job_cancel(job=ctx.job)
        ctx.progress(0.5, force=True)

    assert jobrunner.run_job(_task(), job.pk, body) == "cancelled"
    job.refresh_from_db()
    assert job.state == "cancelled"


def test_a_transient_error_hands_the_job_back_for_a_retry():
    job = _job()

    def body(ctx):
        raise OperationalError("server closed the connection unexpectedly")

    with pytest.raises(Retry):
        jobrunner.run_job(_task(), job.pk, body)
    job.refresh_from_db()
    assert (job.state, job.worker) == ("queued", "")
    # After the last retry the job fails for good.
    assert (
        jobrunner.run_job(_task(retries=jobrunner.MAX_TRANSIENT_RETRIES), job.pk, body) == "failed"
    )
    job.refresh_from_db()
    assert job.state == "failed" and "server closed the connection" in job.error


def test_an_unreaped_dead_process_counts_as_dead():
    # A child that exits while its parent does not wait for it stays a zombie.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: jobrunner._is_zombie(child.pid), what="the child to become a zombie")
    try:
        assert jobrunner._dead_here(f"gpu0@host:{child.pid}", "gpu0@host")
        assert not jobrunner._dead_here(f"gpu0@host:{os.getpid()}", "gpu0@host")
    finally:
        child.wait()
