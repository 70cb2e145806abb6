"""Helpers for the detector, report and viewer tests: datasets with accepted masks, and model
versions as a worker registers them (with evaluation numbers chosen by the test)."""

from __future__ import annotations

import numpy as np
from django.core.files.base import ContentFile

from annotation.models import GroundTruth, Job, Label, Mask, ModelVersion, Radiograph


def accept_manual_masks(dataset) -> int:
    """Every COVID-19 case's manual mask becomes its accepted mask (imported as final)."""
    n = 0
    for mask in Mask.objects.filter(
        radiograph__dataset=dataset, radiograph__label=Label.COVID, kind=Mask.Kind.MANUAL
    ).order_by("radiograph_id", "id"):
        _, created = GroundTruth.objects.get_or_create(
            radiograph=mask.radiograph,
            defaults={
                "mask": mask,
                "source": GroundTruth.Source.MANUAL,
                "method": GroundTruth.Method.IMPORTED,
            },
        )
        n += created
    return n


def detector_dataset(phantom_dataset, *, n_covid=8, n_control=8, size=64, seed=7, name="phantoms"):
    dataset, folder = phantom_dataset(
        n_covid=n_covid, n_control=n_control, size=size, manual_fraction=1.0, seed=seed, name=name
    )
    accept_manual_masks(dataset)
    return dataset, folder


def counts(tp, fp, tn, fn) -> dict[str, int]:
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def evaluation(*, pixel, case, truth, max_probs, pixel_covid=None, ms=5.0, dice=0.5):
    """The JSON a detector job stores, with pixel scores spread over a few histogram bins."""
    positives = np.zeros(256, np.int64)
    negatives = np.zeros(256, np.int64)
    # Infected pixels score high when found, low when missed; healthy ones the other way.
    positives[200], positives[50] = pixel["tp"], pixel["fn"]
    negatives[10], negatives[180] = pixel["tn"], pixel["fp"]
    return {
        "pixel": pixel,
        "pixel_covid": pixel_covid or pixel,
        "case": case,
        "truth": list(truth),
        "max_probs": list(max_probs),
        "severities": [0.0] * len(truth),
        "histogram": {
            "bins": 256,
            "positives": positives.tolist(),
            "negatives": negatives.tolist(),
        },
        "mean_dice": dice,
        "ms_per_sample": ms,
        "threshold": 0.5,
        "n_cases": len(truth),
    }


def registered_model(
    dataset,
    *,
    run: str,
    purpose: str = ModelVersion.Purpose.DETECTOR,
    arch: str = "unet",
    encoder: str = "tiny",
    fold: int | None = 0,
    folds: int = 2,
    protocol: str = "kfold",
    metrics: dict | None = None,
    state: str = Job.State.SUCCEEDED,
    params: tuple[int, int] = (1000, 20),
) -> ModelVersion:
    """A finished training job and the model version it registered (weights: a dummy file)."""
    job_params = {
        "run": run,
        "protocol": protocol,
        "folds": folds,
        "fold": fold,
        "train": [],
        "test": [],
        "epochs": 1,
        "batch_size": 4,
        "image_size": 64,
        "lr": 1e-3,
        "frozen": False,
    }
    if purpose == ModelVersion.Purpose.DETECTOR:
        job_params["network"] = {"arch": arch, "encoder": encoder}
        kind = Job.Kind.DETECTOR
    else:
        job_params["encoder"] = encoder
        kind = Job.Kind.CLASSIFIER
    job = Job.objects.create(kind=kind, state=state, dataset=dataset, params=job_params)
    if state != Job.State.SUCCEEDED:
        return None
    mv = ModelVersion.objects.create(
        dataset=dataset,
        purpose=purpose,
        arch=arch if purpose == ModelVersion.Purpose.DETECTOR else "classifier",
        encoder=encoder,
        fold=fold,
        config={k: v for k, v in job_params.items() if k not in ("train", "test")},
        metrics=metrics or _default_metrics(purpose),
        params_trainable=params[0],
        params_non_trainable=params[1],
        job=job,
    )
    mv.weights.save(f"models/{mv.pk}.keras", ContentFile(b"not a real model"), save=True)
    return mv


def _default_metrics(purpose: str) -> dict:
    if purpose == ModelVersion.Purpose.DETECTOR:
        return {
            "evaluation": evaluation(
                pixel=counts(50, 10, 900, 40),
                case=counts(2, 1, 1, 0),
                truth=[1, 1, 0, 0],
                max_probs=[0.9, 0.8, 0.7, 0.1],
            )
        }
    return {
        "evaluation": classifier_evaluation(case=counts(1, 0, 2, 1), probs=[0.9, 0.2, 0.1, 0.3])
    }


def classifier_evaluation(*, case, probs, truth=(1, 1, 0, 0), ms=2.0) -> dict:
    return {
        "case": case,
        "truth": list(truth),
        "probs": list(probs),
        "ms_per_sample": ms,
        "threshold": 0.5,
        "n_cases": len(truth),
    }


def case_ids(dataset) -> list[int]:
    return list(
        Radiograph.objects.filter(dataset=dataset).order_by("id").values_list("id", flat=True)
    )
