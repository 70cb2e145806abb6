"""What an infection-map job (Job.Kind.INFER) has produced, for the viewer and the API."""

from __future__ import annotations

import time
from typing import Any

from annotation.models import Job, ModelVersion
from annotation.roles import ADMIN, has_role
from mlworker.detection.rule import DEFAULT_THRESHOLD

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


# --- reading an infection map: its colour scale and the caveats of its verdict ---------------

# matplotlib's jet, which the worker colours maps with, as the gradient stops of its colour bar.
JET_STOPS = (
    (0.0, "#00007f"),
    (0.125, "#0000ff"),
    (0.375, "#00ffff"),
    (0.625, "#ffff00"),
    (0.875, "#ff0000"),
    (1.0, "#7f0000"),
)
COLOUR_BAR_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
# A score this close to the threshold could have gone the other way.
NEAR_THRESHOLD = 0.05
FRONTAL_VIEWS = {"PA", "AP"}
CHEST_PARTS = ("CHEST", "THORAX", "LUNG")
RADIOGRAPHY_MODALITIES = {"CR", "DX", "DR"}
# Width / height of a frontal CXR is about 0.8 to 1.25; far outside it is another image.
ASPECT_RANGE = (0.6, 1.6)


def colour_bar() -> dict[str, Any]:
    """What the map's colour bar draws: jet stops, ticks and the detection threshold."""
    return {
        "stops": [{"offset": f"{100 * at:g}%", "colour": colour} for at, colour in JET_STOPS],
        "ticks": [{"value": f"{v:g}", "x": f"{100 * v:g}%"} for v in COLOUR_BAR_TICKS],
        "threshold": DEFAULT_THRESHOLD,
        "threshold_x": f"{100 * DEFAULT_THRESHOLD:g}%",
    }


def input_caveats(*, metadata: dict[str, Any], width: int, height: int) -> list[str]:
    """Why an image may lie outside what the detector was trained on (frontal chest
    radiographs, greyscale): from its DICOM facts, its colour and its shape."""
    caveats = []
    view = str(metadata.get("view_position", "")).strip().upper()
    if view and view not in FRONTAL_VIEWS:
        caveats.append(f"the view position is {view}, not a frontal (PA or AP) view")
    part = str(metadata.get("body_part_examined", "")).strip().upper()
    if part and not any(p in part for p in CHEST_PARTS):
        caveats.append(f"the body part examined is {part}, not the chest")
    modality = str(metadata.get("modality", "")).strip().upper()
    if modality and modality not in RADIOGRAPHY_MODALITIES:
        caveats.append(f"the modality is {modality}, not a radiograph (CR, DX)")
    if metadata.get("colour"):
        caveats.append("it is a colour image; chest X-rays are greyscale")
    if width and height:
        aspect = width / height
        if not ASPECT_RANGE[0] <= aspect <= ASPECT_RANGE[1]:
            caveats.append(f"its shape ({width}×{height}) is unlike a chest X-ray's")
    return caveats


def score_caveat(max_prob: float | None) -> str:
    """A warning when the detector's score is too close to the threshold to trust its verdict."""
    if max_prob is None or abs(max_prob - DEFAULT_THRESHOLD) > NEAR_THRESHOLD:
        return ""
    return (
        f"The highest infection probability ({max_prob:.3f}) is within ±{NEAR_THRESHOLD} of the "
        f"{DEFAULT_THRESHOLD} threshold: the verdict could easily have been the other one."
    )
