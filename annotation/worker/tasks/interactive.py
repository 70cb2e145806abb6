"""Click-to-refine on the worker side: the job that trains the interactive network from a
stage's accepted masks, and `refine`, the low-latency task of the `interactive` queue that
answers one reader's clicks (see annotation.services.interactive for the protocol).

A worker of the `interactive` queue keeps the models it served loaded (common.load_model_version,
keyed by model version) and the last radiographs it read, so a click costs one forward pass;
on start it loads the current models before the first click arrives."""

from __future__ import annotations

import base64
import json
import logging
import time
from functools import lru_cache
from typing import Any

import numpy as np
from celery import shared_task, signals

from annotation.models import ModelVersion, Radiograph
from annotation.worker.runner import JobCancelled, JobContext, run_job
from annotation.worker.tasks.common import (
    TASK_OPTIONS,
    TRAIN_LIMITS,
    load_cases,
    load_image,
    load_model_version,
    register_model,
    training_reporter,
)
from cxrio import masks as maskio

log = logging.getLogger(__name__)

# How many simulated sessions the job scores its model on (training cases: a sanity figure).
SCORED_CASES = 20
REPLY_TTL_S = 60
IMAGES_KEPT = 32


# --- training --------------------------------------------------------------------------------
def _score(model, images: np.ndarray, masks: np.ndarray) -> dict[str, Any]:
    from mlworker.interactive.model import refiner
    from mlworker.interactive.session import simulate_session

    fn = refiner(model)
    after = {1: [], 3: [], 5: []}
    for image, truth in zip(images[:SCORED_CASES], masks[:SCORED_CASES], strict=True):
        dices = simulate_session(fn, image, truth, max_clicks=5).dices
        for n in after:
            after[n].append(dices[min(n, len(dices) - 1)])
    return {f"dice_after_{n}": round(float(np.mean(v)), 4) for n, v in after.items()}


def _interactive(ctx: JobContext) -> dict[str, Any]:
    from annotation.services.interactive import interactive_model_make_current
    from mlworker.interactive.training import train_interactive

    job, p = ctx.job, ctx.params
    existing = ModelVersion.objects.filter(job=job).first()
    if existing is None:
        size = p["image_size"]
        images, masks, _covid = load_cases(p["training"], size, ctx, span=(0.0, 0.05))
        ctx.log(f"training on {len(images)} accepted masks at {size}×{size}")
        result = train_interactive(
            images,
            masks,
            epochs=p["epochs"],
            batch_size=p["batch_size"],
            lr=p["lr"],
            seed=p["seed"],
            widths=p["widths"],
            max_clicks=p["max_clicks"],
            progress=training_reporter(ctx, span=(0.05, 0.9)),
            should_cancel=ctx.should_cancel,
        )
        if result.cancelled:
            raise JobCancelled
        ctx.progress(0.9, force=True, phase="scoring simulated clicks")
        score = _score(result.model, images, masks)
        existing = register_model(
            ctx,
            result.model,
            training=p["training"],
            purpose=ModelVersion.Purpose.INTERACTIVE,
            arch="interactive",
            encoder="w" + "-".join(str(w) for w in p["widths"]),
            metrics={
                "history": result.history,
                "epochs": result.epochs_done,
                "train_cases": len(images),
                "training_sessions": score,
            },
        )
    interactive_model_make_current(model_version=existing)
    return {"model_version": existing.pk, **existing.metrics.get("training_sessions", {})}


@shared_task(name="annotation.worker.interactive_job", **TASK_OPTIONS, **TRAIN_LIMITS)
def interactive_job(self, job_id: int) -> str:
    return run_job(self, job_id, _interactive)


# --- serving one click -------------------------------------------------------------------------
@lru_cache(maxsize=IMAGES_KEPT)
def _image(radiograph_id: int) -> np.ndarray:
    radiograph = Radiograph.objects.get(pk=radiograph_id)
    return load_image(radiograph, (radiograph.work_height, radiograph.work_width))


def refine_answer(
    *,
    model_version: int,
    radiograph: int,
    mask: str | None,
    clicks: list[dict],
    zones: list[str],
) -> dict[str, Any]:
    """The refined mask as the web process expects it: {ok, png (base64), model_version, ms}."""
    from mlworker.interactive.model import refine

    started = time.perf_counter()
    mv = ModelVersion.objects.get(pk=model_version)
    model = load_model_version(mv)
    image = _image(radiograph)
    current = None if mask is None else maskio.mask_from_png(base64.b64decode(mask))
    refined = refine(
        model, image, current, [(c["y"], c["x"], bool(c["positive"])) for c in clicks], zones
    )
    return {
        "ok": True,
        "png": base64.b64encode(maskio.mask_to_png(refined)).decode(),
        "model_version": mv.pk,
        "ms": round(1000.0 * (time.perf_counter() - started), 1),
    }


@shared_task(name="annotation.worker.refine", ignore_result=True, acks_late=False)
def refine_task(*, reply: str, **request: Any) -> None:
    from annotation.services.interactive import redis_client

    try:
        answer = refine_answer(**request)
    except Exception as exc:  # noqa: BLE001 - the reader gets the reason, the log the trace
        log.exception("refine failed")
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    client = redis_client()
    client.rpush(reply, json.dumps(answer))
    client.expire(reply, REPLY_TTL_S)


@signals.worker_ready.connect
def _warm_up(sender, **kwargs):
    """A worker of the interactive queue loads the current models before the first click."""
    from annotation.services.interactive import QUEUE

    queues = {q.name for q in sender.app.amqp.queues.consume_from.values()}
    if QUEUE not in queues:
        return
    for mv in ModelVersion.objects.filter(purpose=ModelVersion.Purpose.INTERACTIVE, deployed=True):
        try:
            from mlworker.interactive.model import prompt_spec, refine

            model = load_model_version(mv)
            size = prompt_spec(model)[0]
            refine(model, np.zeros((size, size), np.uint8), None, [(0, 0, True)])  # traces predict
            log.info("click-to-refine model #%s loaded", mv.pk)
        except Exception:  # noqa: BLE001 - a broken file must not stop the worker
            log.exception("could not load click-to-refine model #%s", mv.pk)
