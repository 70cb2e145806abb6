"""The final detector's tasks: train and evaluate one network on one fold, train its Grad-CAM
classifier, and analyse one CXR with the deployed models (live inference and the viewer).
Each task takes a Job id (see annotation.worker.runner); Keras loads inside the job bodies only,
so a worker that never runs them never imports it."""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import numpy as np
from celery import shared_task
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from annotation.models import ModelVersion, Radiograph
from annotation.worker.runner import JobCancelled, JobContext, run_job
from annotation.worker.tasks.common import (
    TASK_OPTIONS,
    TRAIN_LIMITS,
    checkpoint_download,
    checkpoint_upload,
    load_cases,
    load_image,
    load_model_version,
    register_model,
    training_reporter,
    work_dir,
)
from cxrio import masks as maskio

log = logging.getLogger(__name__)

# One CXR through a loaded network takes well under a second on a CPU; the limit only stops
# a worker that hangs.
INFER_LIMITS = {"soft_time_limit": 300, "time_limit": 330}


# --- loading cases ------------------------------------------------------------------------
# --- the detector -------------------------------------------------------------------------
def _detector(ctx: JobContext) -> dict[str, Any]:
    from mlworker.detection.evaluate import evaluate_detector, evaluation_record
    from mlworker.detection.train import train_detector

    job, p = ctx.job, ctx.params
    existing = ModelVersion.objects.filter(job=job).first()
    if existing is not None:  # registered just before a crash: only the ensemble may be left
        _ensemble_when_ready(ctx)
        return {"model_version": existing.pk}
    size, net = p["image_size"], p["network"]
    images, masks, covid = load_cases(p["train"], size, ctx, span=(0.0, 0.03))
    local = work_dir(job) / "checkpoint"
    checkpoint_download(job, local)
    result = train_detector(
        config={
            "arch": net["arch"],
            "encoder": net["encoder"],
            "input_shape": (size, size, 3),
            "frozen": bool(p.get("frozen")),
        },
        images=images,
        masks=masks,
        covid=covid,
        epochs=p["epochs"],
        batch_size=p["batch_size"],
        lr=p["lr"],
        seed=p.get("seed", 0),
        checkpoint_dir=local,
        # The checkpoint of each epoch goes to storage before anyone hears it is done.
        progress=training_reporter(
            ctx, span=(0.05, 0.9), on_epoch=lambda: checkpoint_upload(job, local)
        ),
        should_cancel=ctx.should_cancel,
    )
    if result.cancelled:
        checkpoint_upload(job, local)
        raise JobCancelled
    del images, masks
    ctx.log(f"trained {result.epochs_done} epochs; evaluating on {len(p['test'])} test cases")
    test_images, test_masks, test_covid = load_cases(p["test"], size, ctx, span=(0.9, 0.92))
    evaluation = evaluate_detector(
        result.model, test_images, test_masks, test_covid, batch_size=p["batch_size"],
        progress=lambda done, total: ctx.progress(0.92 + 0.06 * done / total, phase="evaluating"),
    )  # fmt: skip
    record = evaluation_record(evaluation)
    mv = register_model(
        ctx,
        result.model,
        training=p["train"],
        purpose=ModelVersion.Purpose.DETECTOR,
        arch=net["arch"],
        encoder=net["encoder"],
        metrics={
            "history": result.history,
            "epochs": result.epochs_done,
            "evaluation": record,
            "test_cases": [r for r, _ in p["test"]],
        },
    )
    _ensemble_when_ready(ctx)
    case = record["case"]
    return {
        "model_version": mv.pk,
        "case_tp": case["tp"],
        "case_fp": case["fp"],
        "case_tn": case["tn"],
        "case_fn": case["fn"],
    }


@shared_task(name="annotation.worker.detector_job", **TASK_OPTIONS, **TRAIN_LIMITS)
def detector_job(self, job_id: int) -> str:
    return run_job(self, job_id, _detector)


def _ensemble_when_ready(ctx: JobContext) -> None:
    """The last network of a fold to finish queues the fold's ensemble, if the run asked."""
    from annotation.services.detector import detector_ensemble_enqueue

    p = ctx.params
    if p.get("ensemble"):
        queued = detector_ensemble_enqueue(
            run=p["run"], fold=p.get("fold"), by=ctx.job.created_by, strict=False
        )
        if queued is not None:
            ctx.log(f"every network of this fold is trained: ensemble job #{queued.pk} queued")


# --- the ensemble of a fold's networks ------------------------------------------------------
def _best_member(members: list[ModelVersion]) -> dict[str, Any]:
    from mlworker.metrics import Counts, scores

    best = None
    for mv in members:
        pixel = Counts(**mv.metrics["evaluation"]["pixel"])
        f1 = scores(pixel)["f1"].value
        if best is None or f1 > best["pixel_f1"]:
            best = {"model_version": mv.pk, "arch": mv.arch, "encoder": mv.encoder}
            best["pixel_f1"] = f1
            best["mean_dice"] = mv.metrics["evaluation"]["mean_dice"]
    return best


def _ensemble(ctx: JobContext) -> dict[str, Any]:
    from mlworker.detection.ensemble import mean_ensemble
    from mlworker.detection.evaluate import evaluate_detector, evaluation_record
    from mlworker.metrics import Counts, scores
    from mlworker.networks import ENSEMBLE, ENSEMBLE_ENCODER

    job, p = ctx.job, ctx.params
    existing = ModelVersion.objects.filter(job=job).first()
    if existing is not None:
        return {"model_version": existing.pk}
    members = list(ModelVersion.objects.filter(pk__in=p["members"]).order_by("pk"))
    if len(members) != len(p["members"]):
        raise RuntimeError("a network of the ensemble was deleted after it was queued")
    ctx.progress(0.05, phase="loading networks")
    model = mean_ensemble([load_model_version(mv) for mv in members])
    size = p["image_size"]
    ctx.log(f"the mean of {len(members)} networks; evaluating on {len(p['test'])} test cases")
    images, masks, covid = load_cases(p["test"], size, ctx, span=(0.1, 0.2))
    evaluation = evaluate_detector(
        model, images, masks, covid, batch_size=p["batch_size"],
        progress=lambda done, total: ctx.progress(0.2 + 0.7 * done / total, phase="evaluating"),
    )  # fmt: skip
    record = evaluation_record(evaluation)
    best = _best_member(members)
    f1 = scores(Counts(**record["pixel"]))["f1"].value
    mv = register_model(
        ctx,
        model,
        training=p["train"],
        purpose=ModelVersion.Purpose.DETECTOR,
        arch=ENSEMBLE,
        encoder=ENSEMBLE_ENCODER,
        metrics={
            "evaluation": record,
            "members": [m.pk for m in members],
            "best_member": best,
            "pixel_f1_gain": round(f1 - best["pixel_f1"], 6),
            "mean_dice_gain": round(record["mean_dice"] - best["mean_dice"], 6),
            "test_cases": [r for r, _ in p["test"]],
        },
    )
    ctx.log(f"ensemble pixel F1 {f1:.4f}; best network {best['pixel_f1']:.4f}")
    return {"model_version": mv.pk, "pixel_f1": round(f1, 6), "best_member": best}


@shared_task(name="annotation.worker.ensemble_job", **TASK_OPTIONS, **TRAIN_LIMITS)
def ensemble_job(self, job_id: int) -> str:
    return run_job(self, job_id, _ensemble)


# --- the Grad-CAM classifier ------------------------------------------------------------------
def _classifier(ctx: JobContext) -> dict[str, Any]:
    from mlworker.detection.evaluate import evaluate_classifier
    from mlworker.detection.train import train_classifier

    job, p = ctx.job, ctx.params
    existing = ModelVersion.objects.filter(job=job).first()
    if existing is not None:
        return {"model_version": existing.pk}
    size = p["image_size"]
    images, _masks, covid = load_cases(p["train"], size, ctx, span=(0.0, 0.03))
    result = train_classifier(
        encoder=p["encoder"],
        images=images,
        covid=covid,
        epochs=p["epochs"],
        batch_size=p["batch_size"],
        lr=p["lr"],
        seed=p.get("seed", 0),
        progress=training_reporter(ctx, span=(0.05, 0.9)),
        should_cancel=ctx.should_cancel,
    )
    if result.cancelled:
        raise JobCancelled
    test_images, _masks, test_covid = load_cases(p["test"], size, ctx, span=(0.9, 0.95))
    evaluation = evaluate_classifier(result.model, test_images, test_covid)
    mv = register_model(
        ctx,
        result.model,
        training=p["train"],
        purpose=ModelVersion.Purpose.CLASSIFIER,
        arch="classifier",
        encoder=p["encoder"],
        metrics={
            "history": result.history,
            "evaluation": evaluation,
            "test_cases": [r for r, _ in p["test"]],
        },
    )
    return {"model_version": mv.pk}


@shared_task(name="annotation.worker.classifier_job", **TASK_OPTIONS, **TRAIN_LIMITS)
def classifier_job(self, job_id: int) -> str:
    return run_job(self, job_id, _classifier)


# --- one CXR: infection map, verdict, severity, Grad-CAM ----------------------------------------


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _xray_of(ctx: JobContext, detector: ModelVersion) -> np.ndarray:
    """The CXR at its working resolution, greyscale uint8."""
    p = ctx.params
    if p["source"] == "radiograph":
        radiograph = Radiograph.objects.get(pk=p["radiograph"])
        return load_image(radiograph, (radiograph.work_height, radiograph.work_width))
    with default_storage.open(p["image"], "rb") as handle:
        image = Image.open(io.BytesIO(handle.read()))
        image.load()
    image = image.convert("L")
    width, height = maskio.working_size(*image.size, max_side=detector.dataset.mask_max_side)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _infer(ctx: JobContext) -> dict[str, Any]:
    from cxrio.masks import encode_probability_png
    from mlworker.detection.analyse import analyse_case, gradcam_overlay

    job, p = ctx.job, ctx.params
    started = time.perf_counter()
    detector = ModelVersion.objects.select_related("dataset").get(pk=p["model_version"])
    classifier = ModelVersion.objects.get(pk=p["classifier"]) if p.get("classifier") else None
    xray = _xray_of(ctx, detector)
    ctx.progress(0.1, phase="loading models")
    loading = time.perf_counter()
    detector_model = load_model_version(detector)
    classifier_model = load_model_version(classifier) if classifier is not None else None
    load_ms = 1000.0 * (time.perf_counter() - loading)
    ctx.progress(0.5, phase="analysing")
    analysis = analyse_case(
        detector_model,
        xray,
        classifier=classifier_model,
        encoder=classifier.encoder if classifier is not None else None,
    )
    images = {
        "xray": _png(xray),
        "map": _png(analysis.infection_map),
        "probability": encode_probability_png(analysis.prob),
    }
    if analysis.gradcam is not None:
        images["gradcam"] = _png(gradcam_overlay(xray, analysis.gradcam))
    files = {}
    for name, data in images.items():
        path = f"inference/{job.pk}/{name}.png"
        if default_storage.exists(path):  # a rerun after a crash replaces its own files
            default_storage.delete(path)
        files[name] = default_storage.save(path, ContentFile(data))
    found = analysis.detection
    return {
        "covid": found.covid,
        "max_prob": round(found.max_prob, 6),
        "severity": round(found.severity, 6),
        "severity_basis": found.severity_basis,
        "classifier_prob": None
        if analysis.classifier_prob is None
        else round(analysis.classifier_prob, 6),
        "width": int(xray.shape[1]),
        "height": int(xray.shape[0]),
        "files": files,
        "model_version": detector.pk,
        "classifier": classifier.pk if classifier is not None else None,
        "ms": {
            **{k: round(v, 1) for k, v in analysis.ms.items()},
            "load_models": round(load_ms, 1),
            "total": round(1000.0 * (time.perf_counter() - started), 1),
        },
    }


@shared_task(name="annotation.worker.infer_job", **TASK_OPTIONS, **INFER_LIMITS)
def infer_job(self, job_id: int) -> str:
    return run_job(self, job_id, _infer)
