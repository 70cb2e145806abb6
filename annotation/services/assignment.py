"""Who reads which case: task creation and leases.

A task is leased to one reader at a time. A lease that runs out returns the task to the pool,
and the next reader who claims it gets a fresh task token and candidate order, so nothing the
first reader saw (URLs, order, rounds, drafts) carries over. A reader never holds two tasks of
the same case in a stage: the query excludes them and a database constraint backs it up.

A reader holds one case per stage and kind (plus the one the screen leases ahead): one
reader's claims are serialised on their user row, so concurrent "next" calls (a double click,
tabs, a retrying client) all get the same case. Accounts that see provenance
(annotation.roles.sees_provenance) are never given a task.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from annotation.lookups import unique_or_none
from annotation.models import (
    Candidate,
    CaseDisagreement,
    CaseFlag,
    DrawingDraft,
    PairwiseRound,
    ReviewTask,
    Stage,
    _opaque_token,
)
from annotation.services.decisions import active_decision, check_blinded
from annotation.services.disagreement import auto_accepted_cases
from annotation.services.review_errors import (
    LeaseLost,
    NotYourTask,
    ReviewError,
    TaskAlreadyDecided,
)

# More candidates than this do not fit one N-way screen.
NWAY_MAX_CHOICES = 6

_rng = random.SystemRandom()


def _shuffled(ids: list[int]) -> list[int]:
    return _rng.sample(ids, len(ids))


def _available(now: datetime) -> Q:
    return Q(status=ReviewTask.Status.OPEN) | Q(
        status=ReviewTask.Status.LEASED, lease_expires_at__lt=now
    )


@transaction.atomic
def review_tasks_create(*, stage: Stage) -> int:
    """One open task per case with candidates and per reader slot. Running it again adds only
    what is missing (new cases, more readers). Returns how many tasks were created."""
    if stage.status in (Stage.Status.CLOSED, Stage.Status.CANCELLED, Stage.Status.FAILED):
        raise ReviewError(f"stage {stage.number} is {stage.get_status_display().lower()}")
    by_case: dict[int, list[int]] = {}
    for radiograph_id, candidate_id in (
        Candidate.objects.filter(stage=stage)
        .order_by("radiograph_id", "id")
        .values_list("radiograph_id", "id")
    ):
        by_case.setdefault(radiograph_id, []).append(candidate_id)
    if stage.mode == Stage.Mode.NWAY:
        crowded = [r for r, ids in by_case.items() if len(ids) > NWAY_MAX_CHOICES]
        if crowded:
            raise ReviewError(
                f"{len(crowded)} case(s) have more than {NWAY_MAX_CHOICES} candidates, "
                "too many for one N-way screen"
            )
    # Cases the agreement rule accepted need no reader (its audit samples still get one).
    for radiograph_id in auto_accepted_cases(stage):
        by_case.pop(radiograph_id, None)
    cases = list(by_case.items())
    if stage.queue_order == Stage.QueueOrder.RANDOM:
        # Tasks are claimed in id order (within a slot): created in a random order, a
        # random queue.
        cases = _rng.sample(cases, len(cases))
    existing = set(
        ReviewTask.objects.filter(stage=stage, kind=ReviewTask.Kind.REVIEW).values_list(
            "radiograph_id", "slot"
        )
    )
    new = [
        ReviewTask(
            stage=stage,
            radiograph_id=radiograph_id,
            kind=ReviewTask.Kind.REVIEW,
            slot=slot,
            candidate_order=_shuffled(ids),
        )
        for radiograph_id, ids in cases
        for slot in range(stage.readers_per_case)
        if (radiograph_id, slot) not in existing
    ]
    ReviewTask.objects.bulk_create(new)
    return len(new)


def task_lease_next(
    *,
    stage: Stage,
    reader: AbstractBaseUser,
    kind: str = ReviewTask.Kind.REVIEW,
    skip: int | None = None,
    now: datetime | None = None,
) -> ReviewTask | None:
    """The reader's current task in the stage, or a newly claimed one; None when the queue is
    empty. `skip` is a task id the caller already has (to lease the next one ahead)."""
    check_blinded(reader)
    if stage.status != Stage.Status.REVIEWING:
        raise ReviewError(f"stage {stage.number} is not open for review")
    now = now or timezone.now()
    lease_until = now + timedelta(seconds=stage.lease_seconds)
    with transaction.atomic():
        # One claim per reader at a time (a double click, tabs, a retrying client): the next
        # call waits here and then finds the case this one leased. Other readers are not held
        # up. SQLite serialises the whole transaction anyway (IMMEDIATE).
        get_user_model().objects.select_for_update(no_key=True).filter(pk=reader.pk).values_list(
            "pk"
        ).get()
        held = (
            ReviewTask.objects.filter(
                stage=stage, kind=kind, reader=reader, status=ReviewTask.Status.LEASED
            )
            .select_related("stage", "radiograph")
            .exclude(pk=skip)
            .order_by("id")
            .first()
        )
        if held is not None and task_lease_renew(task=held, reader=reader, until=lease_until):
            held.lease_expires_at = lease_until
            return held
        for attempt in range(50):
            claimed, exhausted = _claim_one(
                stage=stage, reader=reader, kind=kind, now=now, lease_until=lease_until
            )
            if claimed is not None or exhausted:
                return claimed
            time.sleep(0.002 * attempt)  # others are claiming the same rows; let them finish
    return None


def _claim_one(
    *, stage: Stage, reader: AbstractBaseUser, kind: str, now: datetime, lease_until: datetime
) -> tuple[ReviewTask | None, bool]:
    seen = ReviewTask.objects.filter(stage=stage, kind=kind, reader=reader).values("radiograph_id")
    pool = ReviewTask.objects.filter(stage=stage, kind=kind).filter(_available(now))
    pool = pool.exclude(radiograph_id__in=seen).exclude(
        radiograph_id__in=skipped_cases(stage=stage, reader=reader, kind=kind)
    )
    if kind == ReviewTask.Kind.ADJUDICATION:
        # A senior MD never settles a case they read themselves.
        read = ReviewTask.objects.filter(
            stage=stage, kind=ReviewTask.Kind.REVIEW, reader=reader
        ).values("radiograph_id")
        pool = pool.exclude(radiograph_id__in=read)
    # Inside task_lease_next's transaction: no savepoint of its own (the update below has one).
    with transaction.atomic(savepoint=False):
        # One row at a time: with skip_locked, concurrent readers on PostgreSQL each lock a
        # different row instead of queueing behind one. SQLite serialises writers (IMMEDIATE
        # transactions); there the conditional update below is the guard.
        # With what the caller shows next (its page, the look-ahead screen): stage and case,
        # read here rather than again after the claim (only the task row is locked).
        row = (
            _in_queue_order(stage, pool)
            .select_related("stage", "radiograph")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if row is None:
            # Empty, or every available row is being claimed right now by someone else.
            return None, not pool.exists()
        changes: dict = {"status": ReviewTask.Status.LEASED, "lease_expires_at": lease_until}
        handed_over = row.reader_id is not None and row.reader_id != reader.pk
        if handed_over:
            # Nothing the previous reader saw may identify or continue into this lease.
            changes.update(token=_opaque_token(), candidate_order=_reshuffled(row))
        try:
            with transaction.atomic():
                updated = (
                    ReviewTask.objects.filter(pk=row.pk)
                    .filter(_available(now))
                    .update(reader=reader, **changes)
                )
        except IntegrityError:
            # The same reader claimed another slot of this case a moment ago (second tab).
            return None, False
        if updated != 1:
            return None, False
        if handed_over:
            PairwiseRound.objects.filter(task_id=row.pk).delete()
            DrawingDraft.objects.filter(task_id=row.pk).delete()
        # The row is locked (PostgreSQL) or the transaction alone (SQLite): what was written is
        # what the row holds now.
        for name, value in changes.items():
            setattr(row, name, value)
        row.reader = reader
        return row, False


def _in_queue_order(stage: Stage, pool):
    """The stage's queue order (Stage.queue_order). Every reader slot of the first cases comes
    before the second slot of any, as before; within a slot: random and dataset order follow
    the task ids (made in that order), informative first the least mean pairwise Dice of the
    candidates (cases without figures last), ties by case id."""
    if stage.queue_order == Stage.QueueOrder.INFORMATIVE:
        dice = CaseDisagreement.objects.filter(
            stage_id=OuterRef("stage_id"), radiograph_id=OuterRef("radiograph_id")
        ).values("mean_pairwise_dice")[:1]
        return pool.annotate(_dice=Subquery(dice)).order_by(
            "slot", F("_dice").asc(nulls_last=True), "radiograph_id", "id"
        )
    if stage.queue_order == Stage.QueueOrder.DATASET:
        return pool.order_by("slot", "radiograph_id", "id")
    return pool.order_by("slot", "id")


def _reshuffled(task: ReviewTask) -> list:
    return _shuffled(list(task.candidate_order))


def skipped_cases(*, stage: Stage, reader: AbstractBaseUser, kind: str):
    """The cases (radiograph ids, as a subquery) this reader skipped in the stage: never
    theirs again there, whoever holds them now."""
    return CaseFlag.objects.filter(
        stage=stage, reader=reader, skipped=True, task__kind=kind
    ).values("radiograph_id")


def task_release(*, task: ReviewTask) -> None:
    """Give a held, undecided task back to the pool for other readers, as a fresh task: a new
    token and candidate order, no rounds and no draft, so nothing the reader saw (its URLs, its
    order) carries over. The caller holds the task lock."""
    ReviewTask.objects.filter(pk=task.pk).update(
        status=ReviewTask.Status.OPEN,
        reader=None,
        lease_expires_at=None,
        token=_opaque_token(),
        candidate_order=_reshuffled(task),
    )
    PairwiseRound.objects.filter(task_id=task.pk).delete()
    DrawingDraft.objects.filter(task_id=task.pk).delete()
    task.refresh_from_db()


def reader_task(*, token: str, reader: AbstractBaseUser) -> ReviewTask | None:
    """The task behind a token if this reader holds it (or decided it); None otherwise.
    (Image requests read theirs with annotation.selectors.media_rows.media_task_row.)"""
    tasks = (
        ReviewTask.objects.filter(token=token, reader=reader)
        .exclude(status=ReviewTask.Status.CANCELLED)
        .select_related("stage", "radiograph")
    )
    return unique_or_none(tasks)  # the token is unique


def task_held(*, token: str, reader: AbstractBaseUser) -> ReviewTask:
    """The task behind a token, only if this reader holds it (or decided it)."""
    check_blinded(reader)
    task = reader_task(token=token, reader=reader)
    if task is None:
        raise NotYourTask(
            "This case is not in your queue: if it was, its lease ran out while you were away "
            "and it went to another reader. Your queue has your next case."
        )
    return task


def task_lease_renew(
    *, task: ReviewTask, reader: AbstractBaseUser, until: datetime | None = None
) -> bool:
    """Extend the reader's lease while they work on the screen; False if it is gone."""
    until = until or timezone.now() + timedelta(seconds=task.stage.lease_seconds)
    return (
        ReviewTask.objects.filter(
            pk=task.pk, reader=reader, status=ReviewTask.Status.LEASED
        ).update(lease_expires_at=until)
        == 1
    )


def task_lease_keep(*, task: ReviewTask, reader: AbstractBaseUser) -> datetime:
    """Keep the case for a reader still at its screen; the new expiry. Refused once the case
    is decided or no longer theirs, so the screen can say so before the reader chooses."""
    if task.status == ReviewTask.Status.DONE:
        decision = active_decision(task=task, reader=reader)
        raise TaskAlreadyDecided("This case is already decided.", decision=decision)
    until = timezone.now() + timedelta(seconds=task.stage.lease_seconds)
    if not task_lease_renew(task=task, reader=reader, until=until):
        raise LeaseLost(
            "This case is no longer yours to decide: its lease ran out while you were away "
            "and it went back to the pool. Your queue has your next case."
        )
    return until
