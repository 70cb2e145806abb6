"""What the admin dashboard shows: datasets, stages, jobs and workers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from annotation.models import Dataset, Job, ModelVersion, ReviewTask, Stage, WorkerNode
from annotation.selectors.datasets import dataset_overview
from mlworker.networks import network_label

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
    if job.kind in (Job.Kind.DETECTOR, Job.Kind.ENSEMBLE, Job.Kind.CLASSIFIER):
        net = params.get("network") or {"arch": "classifier", "encoder": params.get("encoder", "?")}
        fold = f", fold {params['fold'] + 1}" if params.get("fold") is not None else ""
        return f"{job.get_kind_display()} {net.get('arch')}/{net.get('encoder')}{fold}"
    if job.kind == Job.Kind.IMPORT:
        return f"Import {params.get('file_name', '')}".strip()
    if job.kind == Job.Kind.INTERACTIVE:
        return f"Train click-to-refine on {len(params.get('training', []))} accepted masks"
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


# --- a job's result as tables -----------------------------------------------------------------

RESULT_LABELS = {
    "imported": "Cases imported",
    "duplicates": "Cases already there",
    "masks_imported": "Manual masks imported",
    "mask_duplicates": "Manual masks already there",
    "skipped": "Files skipped (not images)",
    "dry_run": "Dry run",
    "model_version": "Model",
    "epochs": "Epochs trained",
    "predicted": "Cases predicted",
    "already_done": "Cases already predicted",
    "export": "Export",
    "file": "File",
    "size": "Size",
    "sha256": "SHA-256",
    "n_cases": "Cases",
    "name": "File",
    "reason": "Reason",
    "loss": "Loss",
    "val_loss": "Validation loss",
}
TABLE_TITLES = {"rejected": "Rejected files", "curve": "Epochs"}
MAX_TABLE_ROWS = 500


def _label(key: str) -> str:
    return RESULT_LABELS.get(key) or key.replace("_", " ").capitalize()


def _readable(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if key == "size" and isinstance(value, int):
        for unit in ("bytes", "KiB", "MiB", "GiB"):
            if value < 1024 or unit == "GiB":
                return f"{value:,} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
            value /= 1024
    if isinstance(value, list):
        shown = ", ".join(str(v) for v in value[:20])
        return shown + (f" … ({len(value)} in all)" if len(value) > 20 else "")
    return "—" if value is None else str(value)


def _table(key: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return {
        "key": key,
        "title": TABLE_TITLES.get(key, _label(key)),
        "columns": [_label(c) for c in columns],
        "rows": [[_readable(c, row.get(c)) for c in columns] for row in rows[:MAX_TABLE_ROWS]],
        "more": max(0, len(rows) - MAX_TABLE_ROWS),
    }


def _model_fact(pk: Any) -> str:
    mv = ModelVersion.objects.filter(pk=pk).first() if isinstance(pk, int) else None
    if mv is None:
        return _readable("model_version", pk)
    fold = f", fold {mv.fold + 1}" if mv.fold is not None else ""
    return f"#{mv.pk} {network_label(mv.arch, mv.encoder)}{fold} ({mv.get_purpose_display()})"


def job_result_tables(job: Job) -> dict[str, Any]:
    """A job's result (and a training job's per-epoch curve) as label–value facts and tables,
    for its page: {"facts": [(label, text)], "tables": [{title, columns, rows, more}]}."""
    facts: list[tuple[str, str]] = []
    tables: list[dict[str, Any]] = []

    def walk(prefix: str, data: dict[str, Any]) -> None:
        for key, value in data.items():
            label = f"{prefix}{_label(key)}"
            if key == "model_version" and not prefix:
                facts.append((label, _model_fact(value)))
            elif isinstance(value, dict):
                walk(f"{label} · ", value)
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                tables.append(_table(key, value))
            elif key == "rejected" and value == []:
                facts.append(("Files rejected", "none"))
            else:
                facts.append((label, _readable(key, value)))

    # The dataset's name is the page's business, and only a dry run says it is one.
    shown = {
        k: v
        for k, v in (job.result or {}).items()
        if k != "dataset" and (k, v) != ("dry_run", False)
    }
    walk("", shown)
    curve = (job.progress_detail or {}).get("curve")
    if isinstance(curve, list) and curve and all(isinstance(v, dict) for v in curve):
        tables.append(_table("curve", curve))
    return {"facts": facts, "tables": tables}


def log_tail(text: str, lines: int = 30) -> str:
    """The last lines of a job's log."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
