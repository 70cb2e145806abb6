"""What an infection-map job (Job.Kind.INFER) has produced, for the viewer and the API."""

from __future__ import annotations

import time
from typing import Any

from annotation.models import Job, ModelVersion
from annotation.roles import ADMIN, has_role

IMAGE_NAMES = ("xray", "map", "gradcam", "probability")


def inference_result(*, job: Job) -> dict[str, Any]:
    """The state of an inference job and, once it succeeded, its verdict, severity and images.

    JSON-ready: {"job", "state", "done", "error", "source", "radiograph", "filename",
    "model_version", "classifier", and when succeeded "covid", "verdict", "max_prob",
    "severity", "severity_basis", "classifier_prob", "width", "height", "images" (names of
    the stored PNGs: xray, map, gradcam, probability), "ms"}.
    """
    if job.kind != Job.Kind.INFER:
        raise ValueError(f"job #{job.pk} is not an infection-map job")
    p = job.params
    out: dict[str, Any] = {
        "job": job.pk,
        "state": job.state,
        "done": job.state in (Job.State.SUCCEEDED, Job.State.FAILED, Job.State.CANCELLED),
        "error": _last_line(job.error) if job.state == Job.State.FAILED else "",
        "source": p.get("source"),
        "radiograph": p.get("radiograph"),
        "filename": p.get("filename", ""),
        "model_version": p.get("model_version"),
        "classifier": p.get("classifier"),
    }
    if job.state == Job.State.SUCCEEDED:
        r = job.result
        out.update(
            covid=bool(r["covid"]),
            verdict="COVID-19" if r["covid"] else "No COVID-19 infection found",
            max_prob=r["max_prob"],
            severity=r["severity"],
            severity_basis=r["severity_basis"],
            classifier_prob=r.get("classifier_prob"),
            width=r["width"],
            height=r["height"],
            images=[name for name in IMAGE_NAMES if name in r.get("files", {})],
            ms=r.get("ms", {}),
        )
    return out


def inference_wait(*, job: Job, timeout_s: float = 10.0, poll_s: float = 0.2) -> dict[str, Any]:
    """inference_result once the job has finished, or as it stands after `timeout_s`
    (for an API call that waits briefly before answering "still running, poll this")."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        result = inference_result(job=job)
        if result["done"] or time.monotonic() >= deadline:
            return result
        time.sleep(poll_s)
        job.refresh_from_db()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def inference_image_path(*, job: Job, name: str) -> str | None:
    """Where a succeeded job stored one of its images (None if it has no such image)."""
    if job.kind != Job.Kind.INFER or job.state != Job.State.SUCCEEDED or name not in IMAGE_NAMES:
        return None
    return job.result.get("files", {}).get(name)


def inference_visible_to(*, job: Job, user) -> bool:
    """Uploads belong to whoever made them (and admins); case maps to every viewer user."""
    if job.kind != Job.Kind.INFER:
        return False
    if job.params.get("source") == "upload":
        return job.created_by_id == user.pk or has_role(user, ADMIN)
    return True


def deployed_detectors() -> list[ModelVersion]:
    """Every dataset's deployed detector, newest first."""
    return list(
        ModelVersion.objects.filter(purpose=ModelVersion.Purpose.DETECTOR, deployed=True)
        .select_related("dataset")
        .order_by("-created_at")
    )
