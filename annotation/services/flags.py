"""Flags and skips: a reader marks a case for an admin (poor image quality, not COVID-19,
unsure, other with a comment) and may skip it.

A skipped case goes back to the pool as a fresh task (annotation.services.assignment
.task_release) for the other readers; the reader who skipped it never gets it again in that
stage (the claim excludes the cases they skipped) and goes on to their next case. Every flag
is listed for admins until one of them marks it resolved.

Each write carries the client's idempotency key: a retry returns the stored flag, marked
replayed, and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotation.models import CaseFlag, ReviewTask, Stage
from annotation.services.assignment import reader_task, task_release
from annotation.services.audit import audit_record
from annotation.services.decisions import check_blinded, check_key, lock_held_task
from annotation.services.review_errors import (
    IdempotencyKeyReused,
    MalformedRequest,
    NotYourTask,
    ReviewError,
)

COMMENT_MAX = 2000
REASONS = tuple(CaseFlag.Reason.values)


@dataclass(frozen=True)
class FlagResult:
    flag: CaseFlag
    task: ReviewTask  # the flagged task (after a skip: no longer the reader's)
    replayed: bool = False


def _check_reason(reason: str, comment: str) -> str:
    if reason not in REASONS:
        raise MalformedRequest(f"reason must be one of {', '.join(REASONS)}, not {reason!r}")
    if not isinstance(comment, str):
        raise MalformedRequest("the comment must be text")
    comment = comment.strip()
    if len(comment) > COMMENT_MAX:
        raise MalformedRequest(f"the comment is longer than {COMMENT_MAX} characters")
    if reason == CaseFlag.Reason.OTHER and not comment:
        raise MalformedRequest("say what is wrong in the comment when the reason is 'other'")
    return comment


def _stored(key: str, reader: AbstractBaseUser, skip: bool) -> CaseFlag | None:
    stored = CaseFlag.objects.select_related("task").filter(idempotency_key=key).first()
    if stored is not None and (stored.reader_id != reader.pk or stored.skipped != skip):
        raise IdempotencyKeyReused("this request key was already used for another request")
    return stored


def case_flag(
    *,
    token: str,
    reader: AbstractBaseUser,
    reason: str,
    comment: str = "",
    idempotency_key: str,
    skip: bool = False,
    client_ip: str | None = None,
) -> FlagResult:
    """Flag the case behind the reader's task token for an admin; with skip=True also give it
    back to the pool (an undecided case only) so another reader takes it.

    Bad input (no such reason, 'other' without a comment, a bad key) is refused before
    anything is stored."""
    check_blinded(reader)
    check_key(idempotency_key)
    comment = _check_reason(reason, comment)
    with transaction.atomic():
        stored = _stored(idempotency_key, reader, skip)
        if stored is not None:
            # A retry: after a skip the task has a new token and is no longer the reader's.
            return FlagResult(flag=stored, task=stored.task, replayed=True)
        task = reader_task(token=token, reader=reader)
        if task is None:
            raise NotYourTask("This case is not in your queue.")
        try:
            task = lock_held_task(task_id=task.pk, reader=reader)
        except NotYourTask:
            task = None
        # A concurrent retry with this key may have got in while this one waited for the lock
        # (after a skip, the case is no longer the reader's).
        stored = _stored(idempotency_key, reader, skip)
        if stored is not None:
            return FlagResult(flag=stored, task=stored.task, replayed=True)
        if task is None:
            raise NotYourTask("This case is not in your queue.")
        if skip:
            if task.status != ReviewTask.Status.LEASED:
                raise ReviewError(
                    "you already decided this case; reopen it from your cases to change it"
                )
            if task.stage.status != Stage.Status.REVIEWING:
                raise ReviewError(f"stage {task.stage.number} is not open for review")
        flag = CaseFlag.objects.create(
            stage=task.stage,
            radiograph=task.radiograph,
            task=task,
            reader=reader,
            reason=reason,
            comment=comment,
            skipped=skip,
            idempotency_key=idempotency_key,
        )
        old = {"status": task.status, "reader": task.reader_id}
        if skip:
            task_release(task=task)
        audit_record(
            action="case.skip" if skip else "case.flag",
            actor=reader,
            ip=client_ip,
            target=flag,
            dataset=task.stage.dataset_id,
            old=old if skip else None,
            new={
                "task": task.pk,
                "radiograph": task.radiograph_id,
                "reason": reason,
                "comment": comment,
                "skipped": skip,
                **({"status": task.status, "reader": None} if skip else {}),
            },
        )
        return FlagResult(flag=flag, task=task)


def flag_resolve(*, flag: CaseFlag, by: AbstractBaseUser, client_ip: str | None = None) -> CaseFlag:
    """An admin has looked at the flag: it leaves the list of open flags. Resolving it again
    changes nothing."""
    with transaction.atomic():
        locked = CaseFlag.objects.select_for_update().get(pk=flag.pk)
        if locked.resolved_at is not None:
            return locked
        locked.resolved_at = timezone.now()
        locked.resolved_by = by
        locked.save(update_fields=["resolved_at", "resolved_by"])
        audit_record(
            action="flag.resolve",
            actor=by,
            ip=client_ip,
            target=locked,
            dataset=locked.stage.dataset_id,
            old={"resolved": False},
            new={"resolved": True},
        )
        return locked
