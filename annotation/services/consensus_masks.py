"""Candidates combined from a stage's network masks: the STAPLE consensus and the ensemble.

Two optional extra candidates per case (stage settings "staple" and "ensemble", off by default),
made once every network of the stage has predicted, by the worker that moves the stage on:

- STAPLE (mlworker.staple): the consensus the networks' binary masks imply, with each network's
  sensitivity and specificity as STAPLE estimates them (kept in the mask's details, shown on the
  statistics page beside the readers' win rates);
- ensemble: the mean of the networks' probability maps, thresholded at 0.5 (a network without
  a stored map counts with its binary mask).

In adjudication, a senior MD may start from the STAPLE consensus of the readers' masks
(`readers_consensus`); accepted unchanged, it is stored as a STAPLE mask of the readers' masks.

They are stored, encoded and served like every other candidate (annotation.blinding): readers
cannot tell them from the networks' masks. A case with fewer than two network masks gets
neither. Running it again adds only what is missing.
"""

from __future__ import annotations

import numpy as np
from django.core.files.base import ContentFile

from annotation.models import Mask, Stage
from annotation.services.candidates import candidates_offer, mask_create
from annotation.storage import blob_read
from cxrio.masks import decode_probability_png, encode_probability_png, mask_from_png
from mlworker.staple import staple

COMBINED = (Mask.Kind.STAPLE, Mask.Kind.ENSEMBLE)
READERS = "readers"  # details["of"] of a consensus of readers' masks (adjudication)
ENSEMBLE_THRESHOLD = 0.5


def combined_kinds(config: dict) -> list[str]:
    """The combined candidates a stage's settings ask for."""
    return [kind for kind in COMBINED if config.get(kind)]


def _staple_mask(stage, radiograph, masks, pixels) -> Mask:
    result = staple(pixels)
    raters = [
        {
            "mask": m.pk,
            "model_version": m.model_version_id,
            "sensitivity": round(sens, 6),
            "specificity": round(spec, 6),
        }
        for m, sens, spec in zip(masks, result.sensitivity, result.specificity, strict=True)
    ]
    return mask_create(
        radiograph=radiograph,
        pixels=result.mask,
        kind=Mask.Kind.STAPLE,
        stage=stage,
        details={
            "sources": [m.pk for m in masks],
            "raters": raters,
            "iterations": result.iterations,
        },
    )


def _ensemble_mask(stage, radiograph, masks, pixels) -> Mask:
    maps = [
        decode_probability_png(blob_read(m.probability.name)) if m.probability else p
        for m, p in zip(masks, pixels, strict=True)
    ]
    mean = np.mean(np.asarray(maps, dtype=np.float64), axis=0)
    mask = mask_create(
        radiograph=radiograph,
        pixels=mean >= ENSEMBLE_THRESHOLD,
        kind=Mask.Kind.ENSEMBLE,
        stage=stage,
        details={"sources": [m.pk for m in masks], "threshold": ENSEMBLE_THRESHOLD},
    )
    mask.probability.save(
        f"probabilities/{mask.pk}.png", ContentFile(encode_probability_png(mean)), save=True
    )
    return mask


def combined_candidates_offer(*, stage: Stage, radiograph_ids: list[int]) -> int:
    """Make and offer the stage's combined candidates of these cases; returns how many masks
    were made."""
    kinds = combined_kinds(stage.config)
    if not kinds:
        return 0
    by_case: dict[int, list[Mask]] = {}
    for mask in (
        Mask.objects.filter(
            stage=stage,
            kind=Mask.Kind.NETWORK,
            radiograph_id__in=radiograph_ids,
            normalised_from__isnull=True,  # the networks' masks as predicted
        )
        .select_related("radiograph")
        .order_by("radiograph_id", "id")
    ):
        by_case.setdefault(mask.radiograph_id, []).append(mask)
    # Runs under the stage's row lock (stage_advance), so this check is not raced. Readers'
    # consensus masks in adjudication (author-less too, but with "of": "readers") do not count.
    done = {
        (radiograph_id, kind)
        for radiograph_id, kind, details in Mask.objects.filter(
            stage=stage, kind__in=kinds, radiograph_id__in=by_case
        ).values_list("radiograph_id", "kind", "details")
        if details.get("of") != READERS
    }
    made = 0
    for radiograph_id, masks in by_case.items():
        todo = [k for k in kinds if (radiograph_id, k) not in done]
        if len(masks) < 2 or not todo:
            continue
        radiograph = masks[0].radiograph
        pixels = [mask_from_png(blob_read(m.png.name)) for m in masks]
        new = []
        if Mask.Kind.STAPLE in todo:
            new.append(_staple_mask(stage, radiograph, masks, pixels))
        if Mask.Kind.ENSEMBLE in todo:
            new.append(_ensemble_mask(stage, radiograph, masks, pixels))
        candidates_offer(stage=stage, radiograph=radiograph, masks=new)
        made += len(new)
    return made


def readers_consensus(masks: list[Mask]) -> np.ndarray:
    """The STAPLE consensus of readers' masks of one case (two or more)."""
    return staple([mask_from_png(blob_read(m.png.name)) for m in masks]).mask
