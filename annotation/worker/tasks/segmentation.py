"""Candidate generation: train a segmentation network on accepted masks, then predict the
cases it did not see. Each task takes a Job id (see annotation.worker.runner)."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import shared_task

from annotation.models import Job, Mask, ModelVersion, Radiograph, Stage
from annotation.services.disagreement import case_disagreement_update
from annotation.services.model_versions import prediction_record
from annotation.worker.runner import JobCancelled, JobContext, run_job
from annotation.worker.tasks.common import (
    PREDICT_BATCH,
    PREDICT_LIMITS,
    TASK_OPTIONS,
    TRAIN_LIMITS,
    checkpoint_download,
    checkpoint_upload,
    history_curve,
    load_cases,
    load_image,
    load_model_version,
    register_model,
    training_reporter,
    work_dir,
)

log = logging.getLogger(__name__)


# --- training ---------------------------------------------------------------------------
def _train(ctx: JobContext) -> dict[str, Any]:
    from mlworker.train import train_segmenter

    job, p = ctx.job, ctx.params
    existing = ModelVersion.objects.filter(job=job).first()
    if existing is not None:  # registered just before a crash: nothing left to train
        return {"model_version": existing.pk}
    size = p["image_size"]
    images, masks, _covid = load_cases(p["training"], size, ctx, span=(0.0, 0.02))
    local = work_dir(job) / "checkpoint"
    checkpoint_download(job, local)
    resumed = _checkpoint_epoch(local)
    if resumed:
        ctx.log(f"resuming from the checkpoint of epoch {resumed}")
    ctx.progress(0.02, force=True, resumed_from_epoch=resumed)
    net = p["network"]
    model_config = {
        "arch": net["arch"],
        "encoder": net["encoder"],
        "input_shape": (size, size, 3),
        "frozen": p["frozen"],
    }
    if p.get("start_weights"):
        model_config["start_weights"] = str(_start_weights(ctx, p["start_weights"], net, size))

    result = train_segmenter(
        model_or_config=model_config,
        train_data=(images, masks),
        epochs=p["epochs"],
        batch_size=p["batch_size"],
        lr=p["learning_rate"],
        seed=p["seed"],
        checkpoint_dir=local,
        # The checkpoint of each epoch goes to storage before anyone hears it is done.
        progress=training_reporter(
            ctx, span=(0.02, 0.98), on_epoch=lambda: checkpoint_upload(job, local)
        ),
        should_cancel=ctx.should_cancel,
        augment=p["augment"],
    )
    if result.cancelled:
        checkpoint_upload(job, local)
        raise JobCancelled
    # A worker that died between an epoch's checkpoint and its report left a gap in the
    # curve: the checkpoint's history is complete, so the curve is rebuilt from it.
    ctx.progress(0.98, force=True, curve=history_curve(result.history))
    mv = register_model(
        ctx,
        result.model,
        purpose=p.get("purpose", ModelVersion.Purpose.CANDIDATE),
        arch=net["arch"],
        encoder=net["encoder"],
        training=p["training"],
        metrics={"history": result.history, "epochs": result.epochs_done},
    )
    return {"model_version": mv.pk, "epochs": result.epochs_done}


def _start_weights(ctx: JobContext, folder: str, net: dict, size: int):
    """The file a network starts from: in `folder`, or for "demo" the demo's phantom-trained
    networks (made here on first use, several CPU minutes, once; see mlworker.demo_weights)."""
    from django.conf import settings

    from annotation.presets import DEMO_START_WEIGHTS
    from mlworker.demo_weights import demo_start_weights, weights_file_name

    name = weights_file_name(net["arch"], net["encoder"], size)
    if folder != DEMO_START_WEIGHTS:
        return Path(folder).expanduser() / name
    demo_folder = Path(settings.VAR_DIR) / "demo" / "start-weights"
    if not (demo_folder / name).is_file():
        ctx.progress(0.02, force=True, phase="training the demo's start weights")
        ctx.log(f"training the demo's start weights in {demo_folder} (once)")
        with _folder_lock(demo_folder):
            demo_start_weights(
                demo_folder, log=ctx.log, archs=[net["arch"]], encoder=net["encoder"],
                image_size=size,
            )  # fmt: skip
    return demo_folder / name


@contextmanager
def _folder_lock(folder: Path):
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _checkpoint_epoch(local) -> int:
    from mlworker.train import STATE_FILE

    state = local / STATE_FILE
    return int(json.loads(state.read_text()).get("epoch", 0)) if state.exists() else 0


def _advance(job_id: int) -> None:
    from annotation.services.stages import stage_advance

    job = Job.objects.select_related("stage").get(pk=job_id)
    if job.stage is not None and job.state == Job.State.SUCCEEDED:
        stage_advance(stage=job.stage)


@shared_task(name="annotation.worker.train_job", **TASK_OPTIONS, **TRAIN_LIMITS)
def train_job(self, job_id: int) -> str:
    state = run_job(self, job_id, _train)
    _advance(job_id)
    return state


# --- prediction ---------------------------------------------------------------------------
def _predict(ctx: JobContext) -> dict[str, Any]:
    from cxrio.masks import encode_probability_png
    from mlworker.predict import binarize, predict_probabilities

    job, p = ctx.job, ctx.params
    mv = ModelVersion.objects.get(pk=p["model_version"])
    model = load_model_version(mv)
    stage = Stage.objects.get(pk=job.stage_id)
    done = set(
        Mask.objects.filter(
            radiograph_id__in=p["radiographs"],
            model_version=mv,
            kind=Mask.Kind.NETWORK,
            normalised_from__isnull=True,
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
            prediction_record(
                stage=stage,
                radiograph=radiograph,
                model_version=mv,
                pixels=binarize(prob),
                probability_png=encode_probability_png(prob),
            )
            # With this network's candidate offered, how much the case's candidates disagree
            # (the last network to predict a case leaves the complete figures).
            case_disagreement_update(stage=stage, radiograph=radiograph)
        done_now = start + len(chunk)
        ctx.progress(done_now / len(todo), phase="predicting", done=done_now, total=len(todo))
    return {"predicted": len(todo), "already_done": len(done)}


@shared_task(name="annotation.worker.predict_job", **TASK_OPTIONS, **PREDICT_LIMITS)
def predict_job(self, job_id: int) -> str:
    state = run_job(self, job_id, _predict)
    _advance(job_id)
    return state
