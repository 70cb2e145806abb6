"""Masks and the candidates offered for review.

Identical masks (same pixels) are offered once per case and stage: the candidate lists every
mask that produced those pixels in `sources`, so a reader never compares a mask with itself.

Outline normalisation (the stage setting "normalise_outlines", on by default): every mask a
reader is shown (manual, network, drawn, refined) is first redrawn in one outline style by
cxrio.outline.normalise_outline(), so polygon clicks and a network's smooth blobs cannot be
told apart by their outlines. The redrawn mask is stored as its own Mask (same kind, author and
model, `normalised_from` = the original); the candidate shows it, and its `sources` keep the
originals, so provenance and exports still reach the masks as drawn or predicted.
"""

from __future__ import annotations

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from annotation import blinding
from annotation.models import Candidate, GroundTruth, Mask, ModelVersion, Radiograph, Stage
from annotation.services.review_errors import InvalidMask
from annotation.storage import MASKS, blob_read, blob_write, content_path
from cxrio import masks as maskio
from cxrio.outline import OUTLINE_VERSION, normalise_outline


def mask_create(
    *,
    radiograph: Radiograph,
    pixels: np.ndarray,
    kind: str,
    author: AbstractBaseUser | None = None,
    model_version: ModelVersion | None = None,
    stage: Stage | None = None,
    source_name: str = "",
    details: dict | None = None,
    normalised_from: Mask | None = None,
) -> Mask:
    """Store a boolean mask at the case's working resolution as a content-addressed 1-bit PNG."""
    pixels = np.asarray(pixels, dtype=bool)
    if pixels.shape != (radiograph.work_height, radiograph.work_width):
        raise InvalidMask(
            f"mask is {pixels.shape[1]}×{pixels.shape[0]} but the case's working resolution "
            f"is {radiograph.work_width}×{radiograph.work_height}"
        )
    pixel_sha = maskio.pixel_sha256(pixels)
    # Named by its pixels, as imports name theirs: the same mask is one blob however it came.
    path = content_path(MASKS, pixel_sha, "png")
    data = maskio.mask_to_png(pixels)
    # Content-addressed: a rolled-back transaction leaves a blob the same pixels would write
    # again, so it is left in place rather than deleted under a concurrent writer.
    blob_write(path, data)
    return Mask.objects.create(
        radiograph=radiograph,
        kind=kind,
        png=path,
        pixel_sha256=pixel_sha,
        width=radiograph.work_width,
        height=radiograph.work_height,
        area=int(pixels.sum()),
        author=author,
        model_version=model_version,
        stage=stage,
        source_name=source_name,
        details=details or {},
        normalised_from=normalised_from,
    )


def outlines_normalised(stage: Stage) -> bool:
    """Whether the stage shows every candidate in the one outline style (default: yes)."""
    return bool((stage.config or {}).get("normalise_outlines", True))


def mask_normalise(mask: Mask) -> Mask:
    """The mask's outline-normalised form, made once and found again after that.

    Same kind, author, model, stage and details as the original (plus the outline style's
    version), so provenance and credit are unchanged; `normalised_from` names the original. A normalised mask is its own form."""
    if mask.normalised_from_id is not None:
        return mask
    existing = Mask.objects.filter(normalised_from=mask).first()
    if existing is not None:
        return existing
    radiograph = mask.radiograph
    pixels = maskio.mask_from_png(blob_read(mask.png.name))
    if pixels.shape != (radiograph.work_height, radiograph.work_width):
        pixels = maskio.resize_nearest(
            pixels, width=radiograph.work_width, height=radiograph.work_height
        )
    return mask_create(
        radiograph=radiograph,
        pixels=normalise_outline(pixels),
        kind=mask.kind,
        author=mask.author,
        model_version=mask.model_version,
        stage=mask.stage,
        source_name=mask.source_name,
        # Which version of the shared style drew it (cxrio.outline.OUTLINE_VERSION).
        details={**(mask.details or {}), "outline_version": OUTLINE_VERSION},
        normalised_from=mask,
    )


def mask_shown(*, stage: Stage, mask: Mask) -> Mask:
    """What readers of `stage` are shown for `mask`: its normalised form, or itself when the
    stage shows outlines as they are."""
    return mask_normalise(mask) if outlines_normalised(stage) else mask


@transaction.atomic
def candidates_offer(*, stage: Stage, radiograph: Radiograph, masks: list[Mask]) -> list[Candidate]:
    """The case's candidates in the stage after adding these masks (deduplicated by the pixels
    readers are shown). With outline normalisation on, a candidate shows the normalised mask
    and its `sources` hold the originals."""
    for mask in masks:
        if mask.radiograph_id != radiograph.pk:
            raise InvalidMask(f"mask #{mask.pk} belongs to another case")
    for mask in masks:
        shown = mask_shown(stage=stage, mask=mask)
        candidate, _ = Candidate.objects.get_or_create(
            stage=stage,
            radiograph=radiograph,
            pixel_sha256=shown.pixel_sha256,
            defaults={"mask": shown},
        )
        candidate.sources.add(mask.normalised_from or mask)
        # Rendered here (in the worker that offers it), not on the first screen that shows it.
        blinding.mask_overlay(candidate.mask, radiograph=radiograph)
    return list(Candidate.objects.filter(stage=stage, radiograph=radiograph).order_by("id"))


# Masks made from several networks' masks (annotation.services.consensus_masks).
COMBINED_KINDS = (Mask.Kind.STAPLE, Mask.Kind.ENSEMBLE)


def candidate_source(candidate: Candidate) -> tuple[str, list[ModelVersion]]:
    """Where a candidate accepted as it is came from, and the networks that produced it."""
    masks = {candidate.mask, *candidate.sources.select_related("model_version").order_by()}
    versions = {m.model_version for m in masks if m.model_version_id}
    combined = [m.details.get("sources", []) for m in masks if m.kind in COMBINED_KINDS]
    if combined:
        # A combination is credited to the networks whose masks it combines.
        ids = {pk for sources in combined for pk in sources}
        versions |= set(ModelVersion.objects.filter(masks__id__in=ids).distinct())
    versions = sorted(versions, key=lambda v: v.pk)
    kinds = {m.kind for m in masks}
    # A candidate that equals the manual mask is credited to the manual mask; the networks
    # that produced the same pixels are still listed in model_versions.
    for kind, source in (
        (Mask.Kind.MANUAL, GroundTruth.Source.MANUAL),
        (Mask.Kind.NETWORK, GroundTruth.Source.NETWORK),
        (Mask.Kind.STAPLE, GroundTruth.Source.STAPLE),
        (Mask.Kind.ENSEMBLE, GroundTruth.Source.ENSEMBLE),
        (Mask.Kind.REFINED, GroundTruth.Source.REFINED),
    ):
        if kind in kinds:
            return source, versions
    return GroundTruth.Source.DRAWN, versions
