"""Review rows: decisions and pairwise rounds, written once and revoked, nothing else.

Every write runs under the task row's lock (lock_held_task: select_for_update on PostgreSQL;
SQLite serialises writers with IMMEDIATE transactions) and looks the client's key up again, so
a network retry finds the stored row and a second tab or a double click with a fresh key gets
the existing decision back as TaskAlreadyDecided instead of a second row. The partial unique
constraint on (task, reader) is the last line of defence.

What a decision means for the case's ground truth is annotation.services.consensus; the review
actions that combine both are annotation.services.review.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.lookups import unique_or_none
from annotation.models import (
    Candidate,
    Decision,
    DrawingDraft,
    Mask,
    ModelVersion,
    PairwiseRound,
    ReviewTask,
    Stage,
)
from annotation.roles import ROLE_CONFLICT, sees_provenance
from annotation.services.review_errors import (
    IdempotencyKeyReused,
    InvalidMask,
    MalformedRequest,
    NotYourTask,
    ReviewError,
    RoleConflict,
    TaskAlreadyDecided,
)
from cxrio import masks as maskio

# What a client's idempotency key may look like (the API's serializers check the same).
KEY_PATTERN = r"^[A-Za-z0-9_.:-]{8,64}$"
KEY_HELP = "8-64 of A-Z a-z 0-9 _ . : -"
# A drawn mask is a small binary PNG: a larger one is refused (its route refuses the body).
DRAWING_MAX_BYTES = 8 * 1024 * 1024
_KEY = re.compile(KEY_PATTERN)


def check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY.match(key):
        raise MalformedRequest(
            "a request key of 8-64 letters, digits, '-', '_', '.' or ':' is required"
        )


def check_stage_open(stage: Stage) -> None:
    if stage.status != Stage.Status.REVIEWING:
        raise ReviewError(
            f"stage {stage.number} is {stage.get_status_display().lower()}: "
            "it takes no more decisions"
        )


def screen_ms(value: int) -> int:
    """A client's time on screen, kept within what the column holds."""
    return max(0, min(int(value), 2**31 - 1))


def check_blinded(reader: AbstractBaseUser) -> None:
    """Refuse review work to an account that can see where masks come from."""
    if sees_provenance(reader):
        raise RoleConflict(ROLE_CONFLICT)


def lock_held_task(*, task_id: int, reader: AbstractBaseUser) -> ReviewTask:
    """Lock the task row for this transaction; only its reader may act on it."""
    check_blinded(reader)
    task = unique_or_none(
        ReviewTask.objects.select_for_update(of=("self",))
        .select_related("stage", "radiograph")
        .filter(pk=task_id)
    )
    if task is None or task.reader_id != reader.pk or task.status == ReviewTask.Status.CANCELLED:
        raise NotYourTask(
            "this case is no longer yours: your lease ran out and it went to another reader"
        )
    return task


def decision_stored(*, task: ReviewTask, reader: AbstractBaseUser, key: str) -> Decision | None:
    """The decision this reader already made on this task with this key (a retry), if any."""
    stored = unique_or_none(Decision.objects.filter(idempotency_key=key))  # unique
    if stored is not None and (stored.task_id != task.pk or stored.reader_id != reader.pk):
        raise IdempotencyKeyReused("this request key was already used for another decision")
    return stored


def active_decision(*, task: ReviewTask, reader: AbstractBaseUser) -> Decision | None:
    """The reader's standing (not taken back) decision on the task, if any."""
    return unique_or_none(task.decisions.filter(reader=reader, revoked_at__isnull=True))


def check_undecided(*, task: ReviewTask, reader: AbstractBaseUser) -> None:
    active = active_decision(task=task, reader=reader)
    if active is not None:
        raise TaskAlreadyDecided("you already decided this case", decision=active)


def decision_write(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    idempotency_key: str,
    outcome: str,
    candidate: Candidate | None,
    mask: Mask | None = None,
    position: int | None,
    time_on_screen_ms: int,
    clicks: list[dict[str, Any]] | None = None,
    zones: list[str] | None = None,
    interactive_model: ModelVersion | None = None,
    key_checked: bool = False,
) -> tuple[Decision, bool]:
    """The one place a Decision row is created: (decision, created). The caller holds the task
    lock (lock_held_task) inside an open transaction; a retry gets the stored row, not created
    (key_checked: the caller looked the key up under this lock already and found nothing).
    Deciding closes the task and drops the reader's draft."""
    stored = None if key_checked else decision_stored(task=task, reader=reader, key=idempotency_key)
    if stored is not None:
        return stored, False
    check_undecided(task=task, reader=reader)
    check_stage_open(task.stage)
    if task.status != ReviewTask.Status.LEASED:
        raise ReviewError(f"this case is {task.get_status_display().lower()}, not open")
    try:
        with transaction.atomic():
            decision = Decision.objects.create(
                task=task,
                reader=reader,
                outcome=outcome,
                candidate=candidate,
                mask=mask if mask is not None else candidate.mask,
                position=position,
                time_on_screen_ms=screen_ms(time_on_screen_ms),
                idempotency_key=idempotency_key,
                clicks=clicks or [],
                zones=zones or [],
                interactive_model=interactive_model,
            )
    except IntegrityError:
        stored = decision_stored(task=task, reader=reader, key=idempotency_key)
        if stored is not None:
            return stored, False
        check_undecided(task=task, reader=reader)
        raise
    ReviewTask.objects.filter(pk=task.pk).update(
        status=ReviewTask.Status.DONE, completed_at=timezone.now(), lease_expires_at=None
    )
    task.status = ReviewTask.Status.DONE
    DrawingDraft.objects.filter(task=task, reader=reader).delete()
    return decision, True


def decision_revoke(*, decision: Decision, task: ReviewTask) -> ReviewTask:
    """Take the decision back and lease its case to the reader again, as it was shown: the
    round that produced the decision (the last pick, or "neither") goes too, so a pairwise
    reader sees the same pair again. The caller holds the task lock."""
    Decision.objects.filter(pk=decision.pk).update(revoked_at=timezone.now())
    final_round = task.rounds.order_by("-number").first()
    if final_round is not None:
        final_round.delete()
    lease_until = timezone.now() + timedelta(seconds=task.stage.lease_seconds)
    ReviewTask.objects.filter(pk=task.pk).update(
        status=ReviewTask.Status.LEASED, completed_at=None, lease_expires_at=lease_until
    )
    task.refresh_from_db()
    return task


def round_stored(*, task: ReviewTask, key: str) -> PairwiseRound | None:
    """The round recorded with this key (a retry), if any; a key of another case is refused."""
    stored = unique_or_none(PairwiseRound.objects.filter(idempotency_key=key))
    if stored is not None and stored.task_id != task.pk:
        raise IdempotencyKeyReused("this request key was already used for another case")
    return stored


def round_write(
    *,
    task: ReviewTask,
    number: int,
    left_id: int,
    right_id: int,
    winner_id: int | None,
    idempotency_key: str,
    time_on_screen_ms: int,
) -> PairwiseRound | None:
    """Create one pairwise round; None when a concurrent retry with the same key got in first.
    The caller holds the task lock."""
    try:
        with transaction.atomic():
            return PairwiseRound.objects.create(
                task=task,
                number=number,
                left_id=left_id,
                right_id=right_id,
                winner_id=winner_id,
                idempotency_key=idempotency_key,
                time_on_screen_ms=screen_ms(time_on_screen_ms),
            )
    except IntegrityError:
        if round_stored(task=task, key=idempotency_key) is not None:
            return None
        raise


def drawing_validate(*, task: ReviewTask, png: bytes, allow_empty: bool) -> np.ndarray:
    """The boolean mask in a drawn PNG, checked against the case's working resolution."""
    size = (task.radiograph.work_width, task.radiograph.work_height)
    if not png:
        raise InvalidMask("no drawing was sent")
    if len(png) > DRAWING_MAX_BYTES:
        raise InvalidMask("the drawing is larger than 8 MB; it should be a small binary PNG")
    try:
        # The limit guards against decompression bombs; the size check below is exact.
        pixels = maskio.binary_mask(
            png, max_pixels=4 * size[0] * size[1] + 4096, expected_size=size
        )
    except maskio.MaskError as exc:
        raise InvalidMask(f"the drawing cannot be used: {exc}") from exc
    if not allow_empty and not pixels.any():
        raise InvalidMask(
            "the drawing is empty; draw the infected region, or confirm "
            "'no infection visible' to submit an empty mask"
        )
    return pixels
