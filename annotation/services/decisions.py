"""Decisions: written once per (task, reader), idempotent on the client's key, undoable.

Every write locks the task row first (select_for_update on PostgreSQL; SQLite serialises
writers with IMMEDIATE transactions), then looks the key up again, so a network retry returns
the stored Decision and a second tab or a double click with a fresh key gets the existing one
back as TaskAlreadyDecided instead of a second row. The partial unique constraint on
(task, reader) is the last line of defence.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import (
    Candidate,
    Decision,
    DrawingDraft,
    GroundTruth,
    Mask,
    ReviewTask,
    Stage,
)
from annotation.services.candidates import mask_create
from annotation.services.review_errors import (
    CaseFinal,
    IdempotencyKeyReused,
    InvalidChoice,
    InvalidMask,
    NotYourTask,
    ReviewError,
    TaskAlreadyDecided,
)
from cxrio import masks as maskio

_KEY = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$")


def check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidChoice(
            "a request key of 8-64 letters, digits, '-', '_', '.' or ':' is required"
        )


def check_stage_open(stage: Stage) -> None:
    if stage.status != Stage.Status.REVIEWING:
        raise ReviewError(
            f"stage {stage.number} is {stage.get_status_display().lower()}: "
            "it takes no more decisions"
        )


def lock_held_task(*, task_id: int, reader: AbstractBaseUser) -> ReviewTask:
    """Lock the task row for this transaction; only its reader may act on it."""
    task = (
        ReviewTask.objects.select_for_update(of=("self",))
        .select_related("stage", "radiograph")
        .filter(pk=task_id)
        .first()
    )
    if task is None or task.reader_id != reader.pk or task.status == ReviewTask.Status.CANCELLED:
        raise NotYourTask(
            "this case is no longer yours: your lease ran out and it went to another reader"
        )
    return task


def _stored(task: ReviewTask, reader: AbstractBaseUser, key: str) -> Decision | None:
    stored = Decision.objects.filter(idempotency_key=key).first()
    if stored is not None and (stored.task_id != task.pk or stored.reader_id != reader.pk):
        raise IdempotencyKeyReused("this request key was already used for another decision")
    return stored


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
) -> Decision:
    """The one place a Decision row is created. The caller holds the task lock
    (lock_held_task) inside an open transaction."""
    stored = _stored(task, reader, idempotency_key)
    if stored is not None:
        return stored
    active = task.decisions.filter(reader=reader, revoked_at__isnull=True).first()
    if active is not None:
        raise TaskAlreadyDecided("you already decided this case", decision=active)
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
                time_on_screen_ms=max(0, min(int(time_on_screen_ms), 2**31 - 1)),
                idempotency_key=idempotency_key,
            )
    except IntegrityError:
        stored = _stored(task, reader, idempotency_key)
        if stored is not None:
            return stored
        active = task.decisions.filter(reader=reader, revoked_at__isnull=True).first()
        if active is not None:
            raise TaskAlreadyDecided("you already decided this case", decision=active) from None
        raise
    ReviewTask.objects.filter(pk=task.pk).update(
        status=ReviewTask.Status.DONE, completed_at=timezone.now(), lease_expires_at=None
    )
    task.status = ReviewTask.Status.DONE
    DrawingDraft.objects.filter(task=task, reader=reader).delete()
    if task.kind == ReviewTask.Kind.REVIEW:
        from annotation.services.consensus import consensus_settle

        consensus_settle(stage=task.stage, radiograph=task.radiograph)
    return decision


def _replay_or_lock(task: ReviewTask, reader: AbstractBaseUser, key: str):
    check_key(key)
    locked = lock_held_task(task_id=task.pk, reader=reader)
    return locked, _stored(locked, reader, key)


def decision_record(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    position: int,
    idempotency_key: str,
    time_on_screen_ms: int = 0,
) -> Decision:
    """The reader picks the candidate shown at `position` (1-based) of an N-way screen."""
    with transaction.atomic():
        locked, stored = _replay_or_lock(task, reader, idempotency_key)
        if stored is not None:
            return stored
        order = list(locked.candidate_order)
        if locked.kind != ReviewTask.Kind.REVIEW:
            raise InvalidChoice("adjudication is recorded with adjudication_record")
        if locked.stage.mode == Stage.Mode.PAIRWISE and len(order) > 1:
            raise InvalidChoice("a pairwise case is decided round by round")
        if not isinstance(position, int) or not 1 <= position <= len(order):
            raise InvalidChoice(f"position must be 1 to {len(order)}, not {position!r}")
        candidate = Candidate.objects.select_related("mask").get(pk=order[position - 1])
        return decision_write(
            task=locked,
            reader=reader,
            idempotency_key=idempotency_key,
            outcome=Decision.Outcome.CHOSE,
            candidate=candidate,
            position=position,
            time_on_screen_ms=time_on_screen_ms,
        )


def drawing_validate(*, task: ReviewTask, png: bytes, allow_empty: bool):
    """The boolean mask in a drawn PNG, checked against the case's working resolution."""
    size = (task.radiograph.work_width, task.radiograph.work_height)
    if not png:
        raise InvalidMask("no drawing was sent")
    if len(png) > 8 * 1024 * 1024:
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


def decision_record_drawing(
    *,
    task: ReviewTask,
    reader: AbstractBaseUser,
    png: bytes,
    idempotency_key: str,
    base: Candidate | None = None,
    no_infection: bool = False,
    time_on_screen_ms: int = 0,
) -> Decision:
    """The reader rejected the candidates and drew a mask, blank or from `base` (refined).

    An empty mask is accepted only with no_infection=True and never as a refinement: a COVID-19
    case without any marked region is a finding the reader must state, not an accident. A
    'refinement' that changed no pixel is recorded as choosing that candidate."""
    with transaction.atomic():
        locked, stored = _replay_or_lock(task, reader, idempotency_key)
        if stored is not None:
            return stored
        if locked.kind != ReviewTask.Kind.REVIEW:
            raise InvalidChoice("adjudication picks one of the readers' masks")
        order = list(locked.candidate_order)
        if base is not None and base.pk not in order:
            raise InvalidChoice("the mask to refine is not one of this case's candidates")
        if base is not None and no_infection:
            raise InvalidMask("a refined candidate cannot be empty; start from a blank drawing")
        rounds = list(locked.rounds.order_by("number"))
        knockout = locked.stage.mode == Stage.Mode.PAIRWISE and len(order) > 1
        if knockout and (not rounds or rounds[-1].winner_id is not None):
            raise InvalidChoice("in a pairwise case you draw after finding neither acceptable")
        pixels = drawing_validate(task=locked, png=png, allow_empty=no_infection and base is None)
        sha = maskio.pixel_sha256(pixels)
        round_ms = sum(r.time_on_screen_ms for r in rounds)
        if base is not None and sha == base.pixel_sha256:
            return decision_write(
                task=locked,
                reader=reader,
                idempotency_key=idempotency_key,
                outcome=Decision.Outcome.CHOSE,
                candidate=base,
                position=order.index(base.pk) + 1,
                time_on_screen_ms=round_ms + time_on_screen_ms,
            )
        # The key is checked before any file is written; a lost race leaves at most a blob
        # that the same pixels would have produced anyway (content-addressed).
        mask = mask_create(
            radiograph=locked.radiograph,
            pixels=pixels,
            kind=Mask.Kind.REFINED if base is not None else Mask.Kind.DRAWN,
            author=reader,
            stage=locked.stage,
        )
        return decision_write(
            task=locked,
            reader=reader,
            idempotency_key=idempotency_key,
            outcome=Decision.Outcome.REFINED if base is not None else Decision.Outcome.DREW,
            candidate=base,
            mask=mask,
            position=order.index(base.pk) + 1 if base is not None else None,
            time_on_screen_ms=round_ms + time_on_screen_ms,
        )


def decision_undo(
    *, stage: Stage, reader: AbstractBaseUser, idempotency_key: str | None = None
) -> ReviewTask:
    """Revoke the reader's most recent decision in the stage and give the case back to them,
    as long as the case is not final (stage closed, or adjudicated).

    With `idempotency_key` (the key that decision was made with) only that decision is taken
    back: a retry finds it revoked already and returns its case again instead of undoing the
    decision before it, and a decision that is no longer the last one is refused."""
    with transaction.atomic():
        named = None
        if idempotency_key is not None:
            check_key(idempotency_key)
            named = Decision.objects.filter(
                idempotency_key=idempotency_key,
                reader=reader,
                task__stage=stage,
                task__kind=ReviewTask.Kind.REVIEW,
            ).first()
            if named is None:
                raise ReviewError("no decision of yours in this stage was made with this key")
            if named.revoked_at is not None:
                return lock_held_task(task_id=named.task_id, reader=reader)
        last = (
            Decision.objects.filter(
                reader=reader,
                task__stage=stage,
                task__kind=ReviewTask.Kind.REVIEW,
                revoked_at__isnull=True,
            )
            .order_by("-created_at", "-id")
            .first()
        )
        if last is None:
            raise ReviewError("there is no decision of yours to undo in this stage")
        if named is not None and named.pk != last.pk:
            raise ReviewError("only your last decision in this stage can be undone")
        task = lock_held_task(task_id=last.task_id, reader=reader)
        if stage.status == Stage.Status.CLOSED:
            raise CaseFinal("the stage is closed; its decisions are final")
        adjudication = ReviewTask.objects.filter(
            stage=stage, radiograph=task.radiograph, kind=ReviewTask.Kind.ADJUDICATION
        ).first()
        if adjudication is not None:
            if adjudication.status == ReviewTask.Status.DONE:
                raise CaseFinal("a senior MD has settled this case; it can no longer change")
            # Readers disagreed; with this decision gone there is nothing to adjudicate yet.
            ReviewTask.objects.filter(pk=adjudication.pk).update(
                status=ReviewTask.Status.CANCELLED, reader=None, lease_expires_at=None
            )
        truth = GroundTruth.objects.filter(radiograph=task.radiograph).first()
        if truth is not None:
            if truth.stage_id != stage.pk:
                raise CaseFinal("this case's accepted mask comes from another stage")
            truth.delete()
        Decision.objects.filter(pk=last.pk).update(revoked_at=timezone.now())
        # The round that produced the decision (the last pick, or "neither") is taken back too,
        # so the reader sees the same pair again.
        final_round = task.rounds.order_by("-number").first()
        if final_round is not None:
            final_round.delete()
        lease_until = timezone.now() + timedelta(seconds=stage.lease_seconds)
        ReviewTask.objects.filter(pk=task.pk).update(
            status=ReviewTask.Status.LEASED, completed_at=None, lease_expires_at=lease_until
        )
        task.refresh_from_db()
        return task
