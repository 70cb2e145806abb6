"""Candidate disagreement per case and stage, and the agreement rule that accepts a case
without a reader.

`case_disagreement_update` runs after a case's candidates are offered (the prediction
worker, the demo stage) and again, for any case whose candidates changed since, when the
stage's candidates are complete (annotation.services.stages). The figures themselves are
mlworker.disagreement's. They rank the review queue (Stage.queue_order "informative") and
are shown to admins and researchers only: no reader-facing view or serializer reads them.

`stage_auto_accept` runs once the candidates are complete, before the review tasks are
made, and only where the stage enables it (config "auto_accept", off by default): a case
whose candidates all agree (every pair's Dice ≥ "agreement_threshold"; one distinct
candidate agrees) gets its accepted mask without a reader, recorded as
GroundTruth.Method.AUTO_AGREEMENT and in the audit trail — except a fixed, seeded sample
("audit_share" of them), which is flagged `audit_sample` and goes to readers as usual, so
the statistics can show how often readers chose otherwise.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
from django.db import transaction
from django.db.models import Count
from PIL import Image

from annotation.models import (
    Candidate,
    CaseDisagreement,
    GroundTruth,
    Mask,
    Radiograph,
    Stage,
)
from annotation.presets import REVIEW_DEFAULTS
from annotation.services.audit import audit_record
from annotation.services.candidates import candidate_source
from annotation.storage import blob_read
from cxrio.masks import mask_from_png
from mlworker.disagreement import agree, audit_sampled, case_disagreement, medoid

AUTO_ACCEPTED = "auto-accepted by agreement"


def stage_review_setting(stage: Stage, key: str):
    """A review setting of the stage (REVIEW_DEFAULTS where the stage predates it)."""
    return stage.config.get(key, REVIEW_DEFAULTS[key])


def _probability(mask: Mask) -> np.ndarray | None:
    if not mask.probability:
        return None
    image = Image.open(io.BytesIO(blob_read(mask.probability.name)))
    if image.mode != "L":
        raise ValueError(f"probability map of mask #{mask.pk} is not 8-bit greyscale")
    return np.asarray(image, dtype=np.uint8)


def case_disagreement_update(*, stage: Stage, radiograph: Radiograph) -> CaseDisagreement | None:
    """Compute and store how much the case's candidates in the stage disagree; None when the
    case has no candidate there."""
    candidates = list(
        Candidate.objects.filter(stage=stage, radiograph=radiograph)
        .select_related("mask")
        .prefetch_related("sources")
        .order_by("id")
    )
    if not candidates:
        return None
    masks = [mask_from_png(blob_read(c.mask.png.name)) for c in candidates]
    # One map per mask that produced a candidate (a network's probabilities where it kept
    # them, else its binary mask, which is its candidate's pixels).
    maps = []
    n_masks = 0
    for candidate, pixels in zip(candidates, masks, strict=True):
        sources = list(candidate.sources.all())
        n_masks += len(sources)
        sources = sources or [candidate.mask]
        for source in sources:
            prob = _probability(source)
            maps.append(prob if prob is not None and prob.shape == pixels.shape else pixels)
    figures = case_disagreement(masks, maps)
    threshold = stage_review_setting(stage, "agreement_threshold")
    agreed = agree(figures.min_pairwise_dice, threshold)
    record, _ = CaseDisagreement.objects.update_or_create(
        stage=stage,
        radiograph=radiograph,
        defaults={
            "n_candidates": figures.n_candidates,
            "n_masks": n_masks,
            "mean_pairwise_dice": figures.mean_pairwise_dice,
            "min_pairwise_dice": figures.min_pairwise_dice,
            "disagreement_area": figures.disagreement_area,
            "mean_entropy": figures.mean_entropy,
            "auto_candidate": candidates[medoid(masks)] if agreed else None,
        },
    )
    return record


def case_disagreements_refresh(
    *, stage: Stage, radiographs: Iterable[Radiograph] | None = None
) -> int:
    """Update the figures of these cases, or (by default) of every case in the stage whose
    candidates or the masks behind them changed since they were last computed (a mask offered
    later, as the manual masks of a Stage I are; a network that finished alongside another).
    Returns how many were computed."""
    if radiographs is None:
        now = {
            row["radiograph_id"]: (row["candidates"], row["masks"])
            for row in Candidate.objects.filter(stage=stage)
            .values("radiograph_id")
            .annotate(candidates=Count("id", distinct=True), masks=Count("sources"))
            .order_by()
        }
        then = {
            r: (c, m)
            for r, c, m in CaseDisagreement.objects.filter(stage=stage).values_list(
                "radiograph_id", "n_candidates", "n_masks"
            )
        }
        stale = [r for r, counts in now.items() if then.get(r) != counts]
        radiographs = Radiograph.objects.filter(id__in=stale).order_by("id")
    count = 0
    for radiograph in radiographs:
        if case_disagreement_update(stage=stage, radiograph=radiograph) is not None:
            count += 1
    return count


@transaction.atomic
def stage_auto_accept(*, stage: Stage) -> tuple[int, int]:
    """Accept every agreeing case of the stage without a reader, but for the audit sample.
    Nothing happens unless the stage enables it. Returns (accepted, audit samples)."""
    if not stage_review_setting(stage, "auto_accept"):
        return 0, 0
    share = stage_review_setting(stage, "audit_share")
    accepted = audited = 0
    rows = (
        CaseDisagreement.objects.filter(stage=stage, auto_candidate__isnull=False)
        .filter(radiograph__ground_truth__isnull=True)
        .select_related("auto_candidate__mask", "radiograph")
        .order_by("radiograph_id")
    )
    for row in rows:
        if audit_sampled(seed=stage.pk, case_id=row.radiograph_id, share=share):
            if not row.audit_sample:
                row.audit_sample = True
                row.save(update_fields=["audit_sample"])
            audited += 1
            continue
        if row.audit_sample:
            continue  # already in readers' hands
        candidate = row.auto_candidate
        source, versions = candidate_source(candidate)
        truth = GroundTruth.objects.create(
            radiograph=row.radiograph,
            mask=candidate.mask,
            stage=stage,
            source=source,
            method=GroundTruth.Method.AUTO_AGREEMENT,
            agreement=None,
        )
        truth.model_versions.set(versions)
        audit_record(
            action="case.auto_accept",
            actor=None,
            actor_name="agreement rule",
            target=truth,
            dataset=stage.dataset_id,
            old=None,
            new={
                "ground_truth": truth.pk,
                "radiograph": row.radiograph_id,
                "stage": stage.pk,
                "mask": candidate.mask_id,
                "candidate": candidate.pk,
                "method": truth.method,
                "min_pairwise_dice": row.min_pairwise_dice,
                "threshold": stage_review_setting(stage, "agreement_threshold"),
            },
            reason=AUTO_ACCEPTED,
        )
        accepted += 1
    return accepted, audited


def auto_accepted_cases(stage: Stage):
    """Ids of the stage's cases accepted by the agreement rule (they get no review task)."""
    return GroundTruth.objects.filter(
        stage=stage, method=GroundTruth.Method.AUTO_AGREEMENT
    ).values_list("radiograph_id", flat=True)
