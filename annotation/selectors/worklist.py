"""A reader's own cases, and the flags readers raised for admins.

What a reader sees here is as blinded as the review screens: a case is named by its place in
their list, its thumbnail by the task's opaque image and result URLs (annotation.blinding),
and the outcome by what the reader did (chose, refined, drew): never a candidate's source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.urls import reverse

from annotation import blinding
from annotation.models import CaseFlag, Decision, GroundTruth, ReviewTask, Stage
from annotation.roles import MD, SENIOR_MD, has_role
from annotation.selectors.review import QueueRow, reader_queue


@dataclass
class WorkRow:
    """One case the reader decided in a stage."""

    number: int  # its place in the reader's list, in the order they decided
    task: ReviewTask
    decision: Decision
    image_url: str
    mask_url: str
    reopen: bool  # can still be reopened (not final)
    final: str  # why not, in the reader's words ("" when it can)

    @property
    def outcome(self) -> str:
        if self.task.kind == ReviewTask.Kind.ADJUDICATION:
            return "Settled"
        return self.decision.outcome_label

    @property
    def decided_at(self) -> datetime:
        return self.decision.created_at

    @property
    def seconds(self) -> int:
        return round(self.decision.time_on_screen_ms / 1000)


def _final_cases(stage: Stage, radiograph_ids: set[int]) -> tuple[set[int], set[int]]:
    """(cases a senior MD adjudicated, cases whose accepted mask came from elsewhere)."""
    adjudicated = set(
        ReviewTask.objects.filter(
            stage=stage,
            kind=ReviewTask.Kind.ADJUDICATION,
            status=ReviewTask.Status.DONE,
            radiograph_id__in=radiograph_ids,
        ).values_list("radiograph_id", flat=True)
    )
    elsewhere = set(
        GroundTruth.objects.filter(radiograph_id__in=radiograph_ids)
        .exclude(stage=stage)
        .values_list("radiograph_id", flat=True)
    )
    return adjudicated, elsewhere


def reader_worklist(*, stage: Stage, reader: AbstractBaseUser) -> list[WorkRow]:
    """The cases the reader decided in the stage (still standing), in the order they decided
    them, each with whether it can still be reopened."""
    decisions = list(
        Decision.objects.filter(task__stage=stage, reader=reader, revoked_at__isnull=True)
        .select_related("task")
        .order_by("created_at", "id")
    )
    adjudicated, elsewhere = _final_cases(stage, {d.task.radiograph_id for d in decisions})
    rows = []
    for number, decision in enumerate(decisions, 1):
        task = decision.task
        final = ""
        if stage.status != Stage.Status.REVIEWING:
            final = f"stage {stage.get_status_display().lower()}"
        elif task.kind == ReviewTask.Kind.ADJUDICATION or task.radiograph_id in adjudicated:
            final = "adjudicated"
        elif task.radiograph_id in elsewhere:
            final = "accepted"
        rows.append(
            WorkRow(
                number=number,
                task=task,
                decision=decision,
                image_url=reverse("review_image", kwargs={"token": task.token}),
                mask_url=reverse("review_mask", kwargs={"opaque": blinding.result_token(task)}),
                reopen=not final,
                final=final,
            )
        )
    return rows


def reader_stages(*, reader: AbstractBaseUser) -> list[Stage]:
    """The stages where the reader decided a case, newest first."""
    return list(
        Stage.objects.filter(tasks__decisions__reader=reader, tasks__decisions__revoked_at=None)
        .select_related("dataset")
        .distinct()
        .order_by("-created_at", "-id")
    )


@dataclass
class Waiting:
    """What waits for a reader, per stage open for review: their cases, and (senior MDs) the
    adjudications."""

    review: list[QueueRow]
    adjudication: list[QueueRow]


def reader_waiting(*, reader: AbstractBaseUser) -> Waiting:
    def remaining(rows: list[QueueRow]) -> list[QueueRow]:
        return [row for row in rows if row.remaining]

    return Waiting(
        review=remaining(reader_queue(reader=reader)) if has_role(reader, MD) else [],
        adjudication=(
            remaining(reader_queue(reader=reader, kind=ReviewTask.Kind.ADJUDICATION))
            if has_role(reader, SENIOR_MD)
            else []
        ),
    )


def open_flags() -> QuerySet[CaseFlag]:
    """Flags no admin has resolved yet, newest first (the admins' list)."""
    return CaseFlag.objects.filter(resolved_at__isnull=True).select_related(
        "stage", "stage__dataset", "radiograph", "reader"
    )


def recent_resolved_flags(limit: int = 50) -> QuerySet[CaseFlag]:
    return (
        CaseFlag.objects.filter(resolved_at__isnull=False)
        .select_related("stage", "stage__dataset", "radiograph", "reader", "resolved_by")
        .order_by("-resolved_at", "-id")[:limit]
    )


def open_flag_count() -> int:
    return CaseFlag.objects.filter(resolved_at__isnull=True).count()
