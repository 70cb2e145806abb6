"""Helpers every kind of test shares: waiting for something that happens elsewhere (a worker,
a browser, a launched process) and a broker that keeps the messages the services send."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    *,
    what: str,
    timeout: float = 10.0,
    every: float = 0.05,
    explain: Callable[[], str] | None = None,
) -> T:
    """Call `predicate` until it returns something true, and return that; after `timeout`
    seconds fail the test, saying what was awaited and, from `explain`, what was seen."""
    deadline = time.monotonic() + timeout
    while True:
        if value := predicate():
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}" + (f"\n{explain()}" if explain else ""))


def jobs_and_logs(*workers) -> Callable[[], str]:
    """What a timed-out wait on workers shows: one line per job, and each worker's log tail."""

    def explain() -> str:
        from annotation.models import Job

        jobs = "\n".join(
            f"#{j.pk} {j.kind} {j.state} {j.progress:.2f} {j.error[-500:]}"
            for j in Job.objects.order_by("pk")
        )
        logs = "\n".join(worker.log_path.read_text()[-4000:] for worker in workers)
        return f"jobs:\n{jobs}\nworker logs:\n{logs}"

    return explain


def wait_for_job(job, *, worker, timeout: float):
    """Wait until the job has left the queue and finished running; returns it refreshed."""
    from annotation.models import Job

    def finished() -> bool:
        job.refresh_from_db()
        return job.state not in (Job.State.QUEUED, Job.State.RUNNING)

    wait_for(
        finished,
        what=f"job #{job.pk} to finish",
        timeout=timeout,
        every=0.3,
        explain=jobs_and_logs(worker),
    )
    return job


@dataclass(frozen=True)
class Message:
    """One Celery message: the task it names, the job id it carries and the queue it goes to."""

    task: str
    job_id: int
    queue: str


@dataclass
class FakeBroker:
    """Stands in for the broker: `send_task` keeps each message instead of sending it."""

    messages: list[Message] = field(default_factory=list)

    def send_task(self, name: str, args: list[Any] | None = None, **options: Any) -> None:
        (job_id,) = args or [None]
        self.messages.append(Message(name, job_id, options.get("queue", "")))

    @property
    def job_ids(self) -> list[int]:
        return [message.job_id for message in self.messages]
