"""Candidate generation: train a segmentation network on accepted masks, then predict the
cases it did not see. Each task takes a Job id (see annotation.jobrunner)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from typing import Any

import numpy as np
from celery import shared_task
from django.core.files.base import ContentFile
from django.db import transaction

from annotation.jobrunner import JobCancelled, JobContext, run_job
from annotation.models import Job, Mask, ModelVersion, Radiograph, Stage
from annotation.services.candidates import candidates_offer, mask_create
from mlworker.tasks.common import (
    PREDICT_BATCH,
    PREDICT_LIMITS,
    TASK_OPTIONS,
    TRAIN_LIMITS,
    checkpoint_download,
    checkpoint_upload,
    load_image,
    load_model_version,
    load_training_set,
    sha256_file,
    work_dir,
)

log = logging.getLogger(__name__)


# --- training ---------------------------------------------------------------------------
def _train(ctx: JobContext) -> dict[str, Any]:
    from mlworker.nets import count_params
    from mlworker.train import train_segmenter

    job, p = ctx.job, ctx.params
    existing = ModelVersion.objects.filter(job=job).first()
    if existing is not None:  # registered just before a crash: nothing left to train
        return {"model_version": existing.pk}
    size = p["image_size"]
    images, masks = load_training_set(p["training"], size, ctx)
    local = work_dir(job) / "checkpoint"
    checkpoint_download(job, local)
    resumed = _checkpoint_epoch(local)
    if resumed:
        ctx.log(f"resuming from the checkpoint of epoch {resumed}")
    ctx.progress(0.02, force=True, resumed_from_epoch=resumed)
    epochs = p["epochs"]
    net = p["network"]

    curve = [row for row in job.progress_detail.get("curve", []) if isinstance(row, dict)]
    started, start_fraction = time.monotonic(), None

    def report(info: dict[str, Any]) -> None:
        nonlocal start_fraction
        batches = max(1, info.get("batches") or 1)
        fraction = min(1.0, (info["epoch"] - 1 + info["batch"] / batches) / epochs)
        start_fraction = fraction if start_fraction is None else start_fraction
        detail = {
            "phase": "training",
            "epoch": info["epoch"],
            "epochs": epochs,
            "batch": info["batch"],
            "batches": batches,
            "loss": _number(info.get("loss")),
        }
        if fraction > start_fraction:
            rate = (time.monotonic() - started) / (fraction - start_fraction)
            detail["eta_s"] = round(rate * (1.0 - fraction))
        if info["event"] == "epoch":
            # The checkpoint of this epoch goes to storage before anyone hears it is done.
            checkpoint_upload(job, local)
            row = {
                k: _number(v)
                for k, v in info.items()
                if k not in ("event", "batch", "batches", "epochs")
            }
            curve[:] = [r for r in curve if r.get("epoch") != info["epoch"]] + [row]
            detail["curve"] = curve
            ctx.progress(0.02 + 0.96 * fraction, force=True, **detail)
        else:
            ctx.progress(0.02 + 0.96 * fraction, **detail)

    result = train_segmenter(
        model_or_config={
            "arch": net["arch"],
            "encoder": net["encoder"],
            "input_shape": (size, size, 3),
            "frozen": p["frozen"],
        },
        train_data=(images, masks),
        epochs=epochs,
        batch_size=p["batch_size"],
        lr=p["learning_rate"],
        seed=p["seed"],
        checkpoint_dir=local,
        progress=report,
        should_cancel=ctx.should_cancel,
        augment=p["augment"],
    )
    if result.cancelled:
        checkpoint_upload(job, local)
        raise JobCancelled
    model_path = local / "final.keras"
    result.model.save(model_path)
    trainable, frozen = count_params(result.model)
    digest = sha256_file(model_path)
    with transaction.atomic():
        mv = ModelVersion.objects.create(
            dataset=job.dataset,
            stage=job.stage,
            purpose=p.get("purpose", ModelVersion.Purpose.CANDIDATE),
            arch=net["arch"],
            encoder=net["encoder"],
            frozen=p["frozen"],
            fold=p.get("fold"),
            config={k: v for k, v in p.items() if k not in ("training", "predict")},
            training_set=[r for r, _ in p["training"]],
            training_set_sha256=hashlib.sha256(
                repr(sorted(map(tuple, p["training"]))).encode()
            ).hexdigest(),
            metrics={"history": result.history, "epochs": result.epochs_done},
            weights_sha256=digest,
            params_trainable=trainable,
            params_non_trainable=frozen,
            job=job,
        )
        with open(model_path, "rb") as handle:
            mv.weights.save(
                f"models/{mv.pk}-{digest[:12]}.keras", ContentFile(handle.read()), save=True
            )
    shutil.rmtree(work_dir(job), ignore_errors=True)
    return {"model_version": mv.pk, "epochs": result.epochs_done}


def _checkpoint_epoch(local) -> int:
    from mlworker.train import STATE_FILE

    state = local / STATE_FILE
    return int(json.loads(state.read_text()).get("epoch", 0)) if state.exists() else 0


def _number(value: Any) -> Any:
    return round(float(value), 5) if isinstance(value, np.floating | float) else value


def _advance(job_id: int) -> None:
    from annotation.services.stages import stage_advance

    job = Job.objects.select_related("stage").get(pk=job_id)
    if job.stage is not None and job.state == Job.State.SUCCEEDED:
        stage_advance(stage=job.stage)


@shared_task(name="mlworker.tasks.train_job", **TASK_OPTIONS, **TRAIN_LIMITS)
def train_job(self, job_id: int) -> str:
    state = run_job(self, job_id, _train)
    _advance(job_id)
    return state


# --- prediction ---------------------------------------------------------------------------
def _predict(ctx: JobContext) -> dict[str, Any]:
    from mlworker.predict import binarize, encode_probability_png, predict_probabilities

    job, p = ctx.job, ctx.params
    mv = ModelVersion.objects.get(pk=p["model_version"])
    model = load_model_version(mv)
    stage = Stage.objects.get(pk=job.stage_id)
    done = set(
        Mask.objects.filter(
            radiograph_id__in=p["radiographs"], model_version=mv, kind=Mask.Kind.NETWORK
        ).values_list("radiograph_id", flat=True)
    )
    todo = [
        r
        for r in Radiograph.objects.filter(id__in=p["radiographs"]).order_by("id")
        if r.pk not in done
    ]
    for start in range(0, len(todo), PREDICT_BATCH):
        chunk = todo[start : start + PREDICT_BATCH]
        # At each case's working resolution: masks come back at the size they are stored.
        images = [load_image(r, (r.work_height, r.work_width)) for r in chunk]
        probs = predict_probabilities(model, images, batch_size=PREDICT_BATCH)
        for radiograph, prob in zip(chunk, probs, strict=True):
            with transaction.atomic():
                mask = mask_create(
                    radiograph=radiograph,
                    pixels=binarize(prob),
                    kind=Mask.Kind.NETWORK,
                    model_version=mv,
                    stage=stage,
                )
                mask.probability.save(
                    f"probabilities/{mask.pk}.png",
                    ContentFile(encode_probability_png(prob)),
                    save=True,
                )
                candidates_offer(stage=stage, radiograph=radiograph, masks=[mask])
        done_now = start + len(chunk)
        ctx.progress(done_now / len(todo), phase="predicting", done=done_now, total=len(todo))
    return {"predicted": len(todo), "already_done": len(done)}


@shared_task(name="mlworker.tasks.predict_job", **TASK_OPTIONS, **PREDICT_LIMITS)
def predict_job(self, job_id: int) -> str:
    state = run_job(self, job_id, _predict)
    _advance(job_id)
    return state
