"""Staff corrections of review decisions: the one way a decision changes after the fact.

Decisions, rounds and ground truths are read-only in /admin/. A decision found wrong (the wrong
case clicked, a reader who should not have read) is voided here: the decision is revoked, its
case goes back to the pool for a fresh reading, and the case's ground truth is recomputed by
consensus (annotation.services.consensus) — withdrawn until the case is decided again, or, for
a voided adjudication, offered to the senior MDs again. The reason is required and recorded in
the audit trail with the decision and the ground truth before and after.

A closed stage is reopened for review when it is its dataset's latest stage; once a later stage
exists (it may have trained on this ground truth), its decisions are final.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotation.models import (
    Decision,
    DrawingDraft,
    GroundTruth,
    PairwiseRound,
    ReviewTask,
    Stage,
    _opaque_token,
)
from annotation.services.audit import audit_record, decision_summary, truth_summary
from annotation.services.consensus import case_truth, consensus_settle, consensus_unsettle
from annotation.services.review_errors import CaseFinal, ReviewError


class CorrectionError(ReviewError):
    """The decision cannot be voided as asked; nothing was changed."""


def _reopen(stage: Stage) -> str:
    """Make the stage take decisions again; the status it had."""
    old = stage.status
    if stage.status == Stage.Status.CLOSED:
        if stage.dataset.stages.filter(number__gt=stage.number).exists():
            raise CorrectionError(
                f"stage {stage.number} is closed and a later stage exists: its decisions are final"
            )
        stage.status, stage.closed_at = Stage.Status.REVIEWING, None
        stage.save(update_fields=["status", "closed_at"])
    elif stage.status != Stage.Status.REVIEWING:
        raise CorrectionError(f"stage {stage.number} is {stage.get_status_display().lower()}")
    return old


def decision_void(
    *,
    decision: Decision,
    reason: str,
    by: AbstractBaseUser,
    client_ip: str | None = None,
) -> GroundTruth | ReviewTask | None:
    """Void a reader's (or a senior MD's) decision and recompute the case's ground truth.

    Returns what consensus makes of the case now: its GroundTruth, an adjudication task, or
    None while a reading is missing. Raises CorrectionError (changing nothing) without a
    reason, for a decision already revoked, and when the case can no longer change."""
    reason = reason.strip()
    if not reason:
        raise CorrectionError("say why the decision is voided: the reason goes into the audit")
    with transaction.atomic():
        task = (
            ReviewTask.objects.select_for_update(of=("self",))
            .select_related("stage", "stage__dataset", "radiograph")
            .get(pk=decision.task_id)
        )
        decision = Decision.objects.get(pk=decision.pk)
        if decision.revoked_at is not None:
            raise CorrectionError(f"decision #{decision.pk} is already revoked")
        stage = Stage.objects.select_for_update().select_related("dataset").get(pk=task.stage_id)
        truth = case_truth(radiograph_id=task.radiograph_id)
        stage_was = _reopen(stage)
        if task.kind == ReviewTask.Kind.REVIEW:
            adjudicated = ReviewTask.objects.filter(
                stage=stage,
                radiograph=task.radiograph,
                kind=ReviewTask.Kind.ADJUDICATION,
                status=ReviewTask.Status.DONE,
            )
            if adjudicated.exists():
                raise CorrectionError(
                    "a senior MD has settled this case: void the adjudication first"
                )
            try:
                consensus_unsettle(stage=stage, radiograph=task.radiograph)
            except CaseFinal as exc:
                raise CorrectionError(str(exc)) from exc
        elif truth is not None:
            if truth.stage_id != stage.pk:
                raise CorrectionError("this case's accepted mask comes from another stage")
            truth.delete()
        round_winners = list(
            PairwiseRound.objects.filter(task=task)
            .order_by("number")
            .values_list("winner_id", flat=True)
        )
        Decision.objects.filter(pk=decision.pk).update(revoked_at=timezone.now())
        # The case goes back to the pool as a fresh task: nothing of the voided reading stays.
        PairwiseRound.objects.filter(task=task).delete()
        DrawingDraft.objects.filter(task=task).delete()
        ReviewTask.objects.filter(pk=task.pk).update(
            status=ReviewTask.Status.OPEN,
            reader=None,
            lease_expires_at=None,
            completed_at=None,
            token=_opaque_token(),
        )
        outcome = consensus_settle(stage=stage, radiograph=task.radiograph)
        truth_after = outcome if isinstance(outcome, GroundTruth) else None
        audit_record(
            action="decision.void",
            actor=by,
            ip=client_ip,
            target=decision,
            dataset=stage.dataset_id,
            reason=reason,
            old={
                **decision_summary(decision),
                "revoked": False,
                "round_winners": round_winners,
                "accepted": truth_summary(truth),
                "stage_status": stage_was,
            },
            new={
                "revoked": True,
                "task_status": ReviewTask.Status.OPEN,
                "accepted": truth_summary(truth_after),
                "adjudication_opened": isinstance(outcome, ReviewTask),
                "stage_status": stage.status,
            },
        )
    return outcome
