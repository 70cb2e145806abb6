"""The worker board's rows: each Celery worker reports itself at start, on heartbeats and at stop."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from annotation.models import WorkerNode

# Heartbeats come every few seconds; a row is written at most this often.
SEEN_EVERY = timedelta(seconds=15)


def worker_started(*, name: str, queues: list[str], gpus: list[dict], pid: int) -> WorkerNode:
    now = timezone.now()
    node, _ = WorkerNode.objects.update_or_create(
        name=name,
        defaults={
            "queues": queues,
            "gpus": gpus,
            "pid": pid,
            "started_at": now,
            "last_seen_at": now,
            "stopped_at": None,
        },
    )
    return node


def worker_seen(*, name: str) -> None:
    now = timezone.now()
    WorkerNode.objects.filter(name=name, last_seen_at__lt=now - SEEN_EVERY).update(
        last_seen_at=now, stopped_at=None
    )


def worker_stopped(*, name: str) -> None:
    WorkerNode.objects.filter(name=name).update(stopped_at=timezone.now())
