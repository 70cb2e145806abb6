"""Candidate disagreement of a stage's cases, and how the agreement rule fared, for admins
and researchers (the dashboard's stage page and the statistics page; never readers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Avg

from annotation.models import CaseDisagreement, GroundTruth, Stage
from annotation.services.disagreement import stage_review_setting

CASE_ROWS = 200  # cases listed per page, most disagreeing first


@dataclass
class DisagreementRow:
    case: str
    radiograph_id: int
    n_candidates: int
    mean_pairwise_dice: float
    disagreement_area: float
    mean_entropy: float
    outcome: str  # auto-accepted / audit sample / accepted / to review


@dataclass
class StageDisagreement:
    cases: int = 0
    mean_pairwise_dice: float | None = None
    mean_area: float | None = None
    mean_entropy: float | None = None
    agreeing: int = 0
    auto_accepted: int = 0
    audit_samples: int = 0
    audit_decided: int = 0
    audit_overruled: int = 0  # audited cases whose accepted mask is not the rule's
    rows: list[DisagreementRow] = field(default_factory=list)

    @property
    def audit_overruled_share(self) -> float | None:
        return self.audit_overruled / self.audit_decided if self.audit_decided else None


def stage_disagreement(*, stage: Stage, limit: int = CASE_ROWS) -> StageDisagreement:
    records = CaseDisagreement.objects.filter(stage=stage)
    out = StageDisagreement(cases=records.count())
    if not out.cases:
        return out
    means = records.aggregate(
        dice=Avg("mean_pairwise_dice"), area=Avg("disagreement_area"), h=Avg("mean_entropy")
    )
    out.mean_pairwise_dice, out.mean_area, out.mean_entropy = (
        means["dice"],
        means["area"],
        means["h"],
    )
    out.agreeing = records.filter(auto_candidate__isnull=False).count()
    truths = {
        t.radiograph_id: t for t in GroundTruth.objects.filter(stage=stage).select_related("mask")
    }
    out.auto_accepted = sum(t.method == GroundTruth.Method.AUTO_AGREEMENT for t in truths.values())
    for record in records.filter(audit_sample=True).select_related("auto_candidate"):
        out.audit_samples += 1
        truth = truths.get(record.radiograph_id)
        if truth is None or record.auto_candidate is None:
            continue
        out.audit_decided += 1
        if truth.mask.pixel_sha256 != record.auto_candidate.pixel_sha256:
            out.audit_overruled += 1
    for record in records.select_related("radiograph").order_by(
        "mean_pairwise_dice", "radiograph_id"
    )[:limit]:
        truth = truths.get(record.radiograph_id)
        if truth is not None and truth.method == GroundTruth.Method.AUTO_AGREEMENT:
            outcome = "auto-accepted"
        elif record.audit_sample:
            outcome = "audit sample" + (", accepted" if truth is not None else "")
        else:
            outcome = "accepted" if truth is not None else "to review"
        out.rows.append(
            DisagreementRow(
                case=record.radiograph.name,
                radiograph_id=record.radiograph_id,
                n_candidates=record.n_candidates,
                mean_pairwise_dice=record.mean_pairwise_dice,
                disagreement_area=record.disagreement_area,
                mean_entropy=record.mean_entropy,
                outcome=outcome,
            )
        )
    return out


def disagreement_context(*, stage: Stage) -> dict:
    """What the disagreement section of a stage page shows."""
    return {
        "disagreement": stage_disagreement(stage=stage),
        "threshold": stage_review_setting(stage, "agreement_threshold"),
    }
