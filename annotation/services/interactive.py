"""Click-to-refine: the interactive network trained from accepted masks, which version of it is
current, and how a reader's clicks reach it.

Training is a job like the others (kind `interactive`, queue `gpu`): it learns from the
dataset's accepted masks up to a stage and its model becomes the dataset's current
click-to-refine model (ModelVersion purpose `interactive`, deployed).

Serving: the web process never loads Keras. A click is one message on the Celery queue
`interactive`, served by a worker process that keeps the current model loaded
(annotation.worker.tasks.interactive); the answer comes back on a Redis list named in the
message, which the web process waits on for a few seconds. A message nobody took in that time
expires, so a worker that comes back late does not work through stale clicks.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from kombu.exceptions import OperationalError

from annotation.models import GroundTruth, Job, Label, ModelVersion, ReviewTask, Stage
from annotation.services.audit import audit_record
from annotation.services.jobs import job_enqueue
from annotation.services.review_errors import MalformedRequest, ReviewError
from cxrio import masks as maskio
from mlworker.interactive.clicks import ZONES

logger = logging.getLogger(__name__)

QUEUE = "interactive"
REFINE_TASK = "annotation.worker.refine"
MAX_CLICKS = 100
# Training settings an admin may change, and their defaults (CPU-sized, see bench/README.md).
DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 8,
    "image_size": 256,
    "lr": 1e-3,
    "widths": [8, 16, 32, 64, 96],
    "max_clicks": 5,
    "seed": 0,
}
LIMITS: dict[str, tuple[float, float]] = {
    "epochs": (1, 1000),
    "batch_size": (2, 256),
    "image_size": (32, 1024),
    "lr": (1e-6, 0.5),
    "max_clicks": (1, 20),
    "seed": (0, 2**31 - 1),
}
MIN_CASES = 2


class InteractiveError(Exception):
    """The interactive network cannot be trained now (the message says why)."""


class RefineInputError(MalformedRequest):
    """A refine request that cannot be used: bad clicks, zones or mask."""


class RefineUnavailable(ReviewError):
    """No click-to-refine model for the case's dataset, or no worker answered in time."""

    status = 503


# --- training and versions ---------------------------------------------------------------
def interactive_training_set(*, stage: Stage) -> list[list[int]]:
    """[radiograph, mask] of every accepted mask of the stage's dataset that marks infection,
    accepted in this stage, an earlier one, or imported as final."""
    found = (
        GroundTruth.objects.filter(radiograph__dataset=stage.dataset, mask__area__gt=0)
        .filter(Q(stage__isnull=True) | Q(stage__number__lte=stage.number))
        .exclude(radiograph__label=Label.NORMAL)
        .order_by("radiograph_id")
        .values_list("radiograph_id", "mask_id")
    )
    return [[r, m] for r, m in found]


def interactive_config_validate(config: dict[str, Any] | None) -> dict[str, Any]:
    merged = {**DEFAULTS, **(config or {})}
    unknown = set(merged) - set(DEFAULTS)
    if unknown:
        raise InteractiveError(f"unknown settings: {', '.join(sorted(unknown))}")
    for key, (low, high) in LIMITS.items():
        value = merged[key]
        whole = key != "lr"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InteractiveError(f"{key} must be a number")
        if whole and not float(value).is_integer():
            raise InteractiveError(f"{key} must be a whole number")
        if not low <= value <= high:
            raise InteractiveError(f"{key} must be from {low:g} to {high:g}")
        merged[key] = int(value) if whole else float(value)
    widths = merged["widths"]
    if (
        not isinstance(widths, list)
        or not 2 <= len(widths) <= 7
        or not all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 512 for w in widths)
    ):
        raise InteractiveError("widths must be 2 to 7 whole numbers from 1 to 512")
    step = 2 ** (len(widths) - 1)
    if merged["image_size"] % step:
        raise InteractiveError(f"image_size must be a multiple of {step} for {len(widths)} widths")
    return merged


def interactive_train_launch(
    *,
    stage: Stage,
    by: AbstractBaseUser | None = None,
    config: dict[str, Any] | None = None,
    client_ip: str | None = None,
) -> Job:
    """Queue a job that trains the click-to-refine network on the accepted masks up to
    `stage`; when it succeeds its model becomes the dataset's current one."""
    settings_ = interactive_config_validate(config)
    training = interactive_training_set(stage=stage)
    if len(training) < MIN_CASES:
        raise InteractiveError(
            f"the click-to-refine network learns from accepted masks that mark infection: "
            f"{stage} has {len(training)}, it needs at least {MIN_CASES}"
        )
    with transaction.atomic():
        busy = Job.objects.select_for_update().filter(
            kind=Job.Kind.INTERACTIVE,
            dataset=stage.dataset,
            state__in=(Job.State.QUEUED, Job.State.RUNNING),
        )
        if busy.exists():
            raise InteractiveError(
                f"a click-to-refine training of {stage.dataset} is already queued or running "
                f"(job #{busy.first().pk})"
            )
        job = job_enqueue(
            kind=Job.Kind.INTERACTIVE,
            params={**settings_, "training": training},
            dataset=stage.dataset,
            stage=stage,
            created_by=by,
        )
        audit_record(
            action="interactive.train",
            actor=by,
            ip=client_ip,
            target=job,
            dataset=stage.dataset_id,
            new={"stage": stage.pk, "cases": len(training), **settings_},
        )
    return job


def interactive_model_current(*, dataset_id: int) -> ModelVersion | None:
    """The dataset's current click-to-refine model, or None."""
    return ModelVersion.objects.filter(
        dataset_id=dataset_id, purpose=ModelVersion.Purpose.INTERACTIVE, deployed=True
    ).first()


@transaction.atomic
def interactive_model_make_current(*, model_version: ModelVersion) -> ModelVersion:
    """Make a trained click-to-refine model the one its dataset's draw screens use."""
    if model_version.purpose != ModelVersion.Purpose.INTERACTIVE:
        raise InteractiveError(f"model #{model_version.pk} is not a click-to-refine network")
    ModelVersion.objects.filter(
        dataset_id=model_version.dataset_id,
        purpose=ModelVersion.Purpose.INTERACTIVE,
        deployed=True,
    ).exclude(pk=model_version.pk).update(deployed=False)
    ModelVersion.objects.filter(pk=model_version.pk).update(deployed=True)
    model_version.deployed = True
    return model_version


# --- what a reader sends ---------------------------------------------------------------------
def clicks_check(*, task: ReviewTask, clicks: Any) -> list[dict[str, Any]]:
    """The clicks as stored: [{x, y, positive}] in the case's working-image pixels."""
    width, height = task.radiograph.work_width, task.radiograph.work_height
    if not isinstance(clicks, list):
        raise RefineInputError("clicks must be a list of {x, y, positive}")
    if len(clicks) > MAX_CLICKS:
        raise RefineInputError(f"at most {MAX_CLICKS} clicks, got {len(clicks)}")
    out = []
    for i, click in enumerate(clicks, 1):
        if not isinstance(click, dict) or set(click) != {"x", "y", "positive"}:
            raise RefineInputError(f"click {i} must be an object with x, y and positive")
        x, y, positive = click["x"], click["y"], click["positive"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (x, y)):
            raise RefineInputError(f"click {i}: x and y must be whole pixels")
        if not isinstance(positive, bool):
            raise RefineInputError(f"click {i}: positive must be true or false")
        if not (0 <= x < width and 0 <= y < height):
            raise RefineInputError(
                f"click {i} at ({x}, {y}) is outside the {width}×{height} working image"
            )
        out.append({"x": x, "y": y, "positive": positive})
    return out


def zones_check(zones: Any) -> list[str]:
    if not isinstance(zones, list) or not all(isinstance(z, str) for z in zones):
        raise RefineInputError("zones must be a list of lung-zone names")
    unknown = sorted(set(zones) - set(ZONES))
    if unknown:
        raise RefineInputError(
            f"unknown lung zones {', '.join(unknown)}; the zones are {', '.join(ZONES)}"
        )
    return [z for z in ZONES if z in zones]


def refinement_check(
    *, task: ReviewTask, clicks: Any, zones: Any, model_version: int | None
) -> dict[str, Any]:
    """What a decision stores about a click refinement (empty when no click was given)."""
    clicks = clicks_check(task=task, clicks=clicks)
    zones = zones_check(zones)
    if not clicks:
        if zones or model_version is not None:
            raise RefineInputError("zones and an interactive model come with clicks")
        return {}
    found = ModelVersion.objects.filter(
        pk=model_version or 0,
        purpose=ModelVersion.Purpose.INTERACTIVE,
        dataset_id=task.radiograph.dataset_id,
    ).first()
    if found is None:
        raise RefineInputError("clicks need the interactive model version that refined them")
    return {"clicks": clicks, "zones": zones, "interactive_model": found}


# --- serving -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refined:
    png: bytes
    model_version: int
    ms: float


_CLIENTS: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis:
    """A client of the broker's Redis (REDIS_URL: the Celery app's broker), one connection
    pool per process."""
    url = current_app.conf.broker_url
    if url not in _CLIENTS:
        if url.startswith("redis+socket://"):
            _CLIENTS[url] = redis.Redis(unix_socket_path=url.removeprefix("redis+socket://"))
        else:
            _CLIENTS[url] = redis.Redis.from_url(url)
    return _CLIENTS[url]


def _ask_worker(message: dict, *, timeout: float):
    """One refine message to the interactive queue and the worker's answer on its reply list
    (None: no answer within timeout)."""
    reply = f"collabmask:refine:{secrets.token_hex(16)}"
    current_app.send_task(
        REFINE_TASK, kwargs={"reply": reply, **message}, queue=QUEUE, expires=timeout
    )
    client = redis_client()
    try:
        return client.blpop([reply], timeout=max(timeout, 0.1))
    finally:
        client.delete(reply)


def refine_timeout() -> float:
    return float(settings.INTERACTIVE_TIMEOUT_S)


def interactive_refine(
    *,
    task: ReviewTask,
    mask_png: bytes | None,
    clicks: Any,
    zones: Any,
    timeout: float | None = None,
) -> Refined:
    """The case's mask refined by the current click-to-refine model from the reader's mask
    (None: blank), clicks and zones, asked of the interactive worker."""
    clicks = clicks_check(task=task, clicks=clicks)
    if not clicks:
        raise RefineInputError("give at least one click")
    zones = zones_check(zones)
    radiograph = task.radiograph
    size = (radiograph.work_width, radiograph.work_height)
    if mask_png is not None:
        try:
            pixels = maskio.binary_mask(
                mask_png, max_pixels=4 * size[0] * size[1] + 4096, expected_size=size
            )
        except maskio.MaskError as exc:
            raise RefineInputError(f"the current mask cannot be used: {exc}") from exc
        mask_png = maskio.mask_to_png(pixels)
    model = interactive_model_current(dataset_id=radiograph.dataset_id)
    if model is None:
        raise RefineUnavailable(
            "Click-to-refine is off: no click-to-refine model has been trained for this "
            "dataset yet. Draw with the brush instead."
        )
    timeout = refine_timeout() if timeout is None else timeout
    message = {
        "model_version": model.pk,
        "radiograph": radiograph.pk,
        "mask": base64.b64encode(mask_png).decode() if mask_png is not None else None,
        "clicks": clicks,
        "zones": zones,
    }
    started = time.perf_counter()
    for attempt in (1, 2):
        try:
            answer = _ask_worker(message, timeout=timeout - (time.perf_counter() - started))
            break
        except (redis.RedisError, OSError, OperationalError) as exc:
            # A broker connection can drop between two clicks (a restart, an idle timeout):
            # one more try on a fresh connection hides the blip; a broker that stays down is
            # reported in words, and its cause in the log.
            logger.warning("click-to-refine: the broker failed (try %d of 2): %r", attempt, exc)
            if attempt == 2 or time.perf_counter() - started > timeout / 2:
                raise RefineUnavailable(
                    "Click-to-refine cannot reach its worker (the broker does not answer). "
                    "Draw with the brush, and tell an admin."
                ) from exc
            _CLIENTS.pop(current_app.conf.broker_url, None)  # the next try connects afresh
            time.sleep(0.2)
    if answer is None:
        raise RefineUnavailable(
            f"No click-to-refine worker answered within {timeout:g} s: it may be starting or "
            "busy. Try again in a moment, or draw with the brush."
        )
    body = json.loads(answer[1])
    if not body.get("ok"):
        raise RefineUnavailable(f"Click-to-refine failed: {body.get('error', 'unknown error')}")
    return Refined(
        png=base64.b64decode(body["png"]),
        model_version=int(body["model_version"]),
        ms=round(1000.0 * (time.perf_counter() - started), 1),
    )
