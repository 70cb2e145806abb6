"""Trained networks in the registry and what they produce: a worker hands over plain values
(a weights file, counts, metrics, a predicted mask) and these functions write the rows."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from annotation.models import Job, Mask, ModelVersion, Radiograph, Stage
from annotation.services.candidates import candidates_offer, mask_create
from annotation.storage import file_sha256

# Case lists of a job's parameters: recorded as the training set, not as the network's config.
CASE_LISTS = ("training", "predict", "train", "test")


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return file_sha256(handle)[0]


def model_version_register(
    *,
    job: Job,
    weights: Path,
    purpose: str,
    arch: str,
    encoder: str,
    training: list[list[int]],
    metrics: dict[str, Any],
    params_trainable: int,
    params_non_trainable: int,
) -> ModelVersion:
    """Register the network a job trained, with its weights file put in storage, in one
    transaction. It is the job's model (ModelVersion.job is unique), so a rerun of the job
    finds it instead of registering twice."""
    p = job.params
    digest = _sha256(weights)
    with transaction.atomic():
        mv = ModelVersion.objects.create(
            dataset=job.dataset,
            stage=job.stage,
            purpose=purpose,
            arch=arch,
            encoder=encoder,
            frozen=bool(p.get("frozen")),
            fold=p.get("fold"),
            config={k: v for k, v in p.items() if k not in CASE_LISTS},
            training_set=[r for r, _ in training],
            training_set_sha256=hashlib.sha256(
                repr(sorted(map(tuple, training))).encode()
            ).hexdigest(),
            metrics=metrics,
            weights_sha256=digest,
            params_trainable=params_trainable,
            params_non_trainable=params_non_trainable,
            job=job,
        )
        with open(weights, "rb") as handle:
            mv.weights.save(
                f"models/{mv.pk}-{digest[:12]}.keras", ContentFile(handle.read()), save=True
            )
    return mv


def model_version_weights_fetch(*, model_version: ModelVersion, target: Path) -> Path:
    """Copy a registered network's weights file from storage to `target`, checked against its
    sha256 (ValueError when they differ)."""
    with default_storage.open(model_version.weights.name, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    if model_version.weights_sha256 and _sha256(target) != model_version.weights_sha256:
        raise ValueError(f"weights of model #{model_version.pk} do not match their sha256")
    return target


@transaction.atomic
def prediction_record(
    *,
    stage: Stage,
    radiograph: Radiograph,
    model_version: ModelVersion,
    pixels: np.ndarray,
    probability_png: bytes,
) -> Mask:
    """A network's mask for a case, with its probability map, offered as a candidate."""
    mask = mask_create(
        radiograph=radiograph,
        pixels=pixels,
        kind=Mask.Kind.NETWORK,
        model_version=model_version,
        stage=stage,
    )
    mask.probability.save(f"probabilities/{mask.pk}.png", ContentFile(probability_png), save=True)
    candidates_offer(stage=stage, radiograph=radiograph, masks=[mask])
    return mask
