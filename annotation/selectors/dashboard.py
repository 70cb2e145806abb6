"""What the admin dashboard shows: datasets, stages, jobs and workers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from annotation.models import Dataset, Job, ReviewTask, Stage, WorkerNode
from annotation.selectors.datasets import dataset_overview

GONE_AFTER = timedelta(minutes=2)
ACTIVE = (Job.State.QUEUED, Job.State.RUNNING)


def datasets_for_dashboard() -> list[Dataset]:
    datasets = list(dataset_overview())
    pending = dict(
        ReviewTask.objects.filter(status__in=(ReviewTask.Status.OPEN, ReviewTask.Status.LEASED))
        .values_list("stage__dataset")
        .annotate(n=Count("id"))
    )
    stages: dict[int, list[Stage]] = {}
    for stage in Stage.objects.order_by("dataset_id", "number"):
        stages.setdefault(stage.dataset_id, []).append(stage)
    for dataset in datasets:
        dataset.n_pending_reviews = pending.get(dataset.pk, 0)
        dataset.stage_list = stages.get(dataset.pk, [])
    return datasets


def loss_sparkline(curve: list[dict[str, Any]], *, width: int = 120, height: int = 28) -> str:
    """SVG polyline points of the loss per epoch (empty with fewer than two epochs)."""
    losses = [row["loss"] for row in curve if isinstance(row.get("loss"), int | float)]
    if len(losses) < 2:
        return ""
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    step = width / (len(losses) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 2 - (loss - low) / span * (height - 4):.1f}"
        for i, loss in enumerate(losses)
    )


@dataclass
class JobRow:
    job: Job
    title: str
    percent: int
    detail: dict[str, Any]
    sparkline: str
    eta: str


def _eta(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def job_title(job: Job) -> str:
    params = job.params
    if job.kind == Job.Kind.TRAIN:
        net = params.get("network", {})
        fold = f", fold {params['fold'] + 1}" if params.get("fold") is not None else ""
        return f"Train {net.get('arch', '?')}/{net.get('encoder', '?')}{fold}"
    if job.kind == Job.Kind.PREDICT:
        return f"Predict {len(params.get('radiographs', []))} cases with model #{params.get('model_version')}"
    if job.kind in (Job.Kind.DETECTOR, Job.Kind.CLASSIFIER):
        net = params.get("network") or {"arch": "classifier", "encoder": params.get("encoder", "?")}
        fold = f", fold {params['fold'] + 1}" if params.get("fold") is not None else ""
        return f"{job.get_kind_display()} {net.get('arch')}/{net.get('encoder')}{fold}"
    if job.kind == Job.Kind.IMPORT:
        return f"Import {params.get('file_name', '')}".strip()
    return job.get_kind_display()


def job_row(job: Job) -> JobRow:
    detail = job.progress_detail or {}
    state_done = job.state == Job.State.SUCCEEDED
    return JobRow(
        job=job,
        title=job_title(job),
        percent=100 if state_done else int(round(job.progress * 100)),
        detail=detail,
        sparkline=loss_sparkline(detail.get("curve", [])),
        eta=_eta(detail.get("eta_s")) if job.state == Job.State.RUNNING else "",
    )


def job_board(*, stage: Stage | None = None, limit: int = 40) -> list[JobRow]:
    """Active jobs first, then the most recent finished ones."""
    # Live inference runs on every first view of a case: not worth a row on the board.
    jobs = Job.objects.select_related("stage", "dataset").exclude(kind=Job.Kind.INFER)
    if stage is not None:
        jobs = jobs.filter(stage=stage)
    active = list(jobs.filter(state__in=ACTIVE).order_by("created_at")[:limit])
    finished = list(
        jobs.exclude(state__in=ACTIVE).order_by("-finished_at", "-id")[
            : max(0, limit - len(active))
        ]
    )
    return [job_row(job) for job in active + finished]


def stage_job_summary(stage: Stage) -> dict[str, int]:
    counts = stage.jobs.aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(state=Job.State.SUCCEEDED)),
        failed=Count("id", filter=Q(state=Job.State.FAILED)),
        running=Count("id", filter=Q(state=Job.State.RUNNING)),
    )
    return counts


def worker_board() -> list[dict[str, Any]]:
    """Workers seen in the last hour, whether they are online, and the job each runs."""
    now = timezone.now()
    nodes = WorkerNode.objects.filter(last_seen_at__gte=now - timedelta(hours=1))
    running = {
        job.worker.rpartition(":")[0]: job
        for job in Job.objects.filter(state=Job.State.RUNNING).exclude(worker="")
    }
    return [
        {
            "node": node,
            "online": node.stopped_at is None and node.last_seen_at >= now - GONE_AFTER,
            "job": running.get(node.name),
        }
        for node in nodes
    ]
