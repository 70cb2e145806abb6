"""The progress strip's counts (done, and still to do) are what the reader really gets: checked
against a recount from the rows after every step of readers leasing, looking ahead, deciding,
skipping and leaving leases to run out, and against the cases a reader is then given."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import CaseFlag, Decision, ReviewTask, Stage
from annotation.selectors.review import reader_progress
from annotation.services.assignment import task_lease_next
from annotation.services.flags import case_flag
from annotation.services.review import pick_record
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db


def recount(stage: Stage, reader, kind: str = ReviewTask.Kind.REVIEW) -> tuple[int, int]:
    """(done, remaining) from the rows, as a reader would count them."""
    now = timezone.now()
    tasks = list(ReviewTask.objects.filter(stage=stage, kind=kind))
    done = Decision.objects.filter(task__in=tasks, reader=reader, revoked_at__isnull=True).count()
    mine = {t.radiograph_id for t in tasks if t.reader_id == reader.pk}
    held = sum(t.reader_id == reader.pk and t.status == ReviewTask.Status.LEASED for t in tasks)
    skipped = set(
        CaseFlag.objects.filter(
            stage=stage, reader=reader, skipped=True, task__kind=kind
        ).values_list("radiograph_id", flat=True)
    )
    read = set()
    if kind == ReviewTask.Kind.ADJUDICATION:
        read = set(
            ReviewTask.objects.filter(
                stage=stage, kind=ReviewTask.Kind.REVIEW, reader=reader
            ).values_list("radiograph_id", flat=True)
        )
    open_cases = {
        t.radiograph_id
        for t in tasks
        if t.status == ReviewTask.Status.OPEN
        or (t.status == ReviewTask.Status.LEASED and t.lease_expires_at < now)
    }
    return done, held + len(open_cases - mine - skipped - read)


def shown(stage, reader, kind=ReviewTask.Kind.REVIEW) -> tuple[int, int]:
    row = reader_progress(stage=stage, reader=reader, kind=kind)
    return row.done, row.remaining


@pytest.mark.parametrize(("seed", "readers_per_case"), [(0, 2), (1, 1)])
def test_progress_matches_the_rows_through_leases_decisions_skips_and_lapsed_leases(
    seed, readers_per_case
):
    rng = random.Random(seed)
    stage = review_stage(n_cases=7, readers_per_case=readers_per_case, n_networks=2, seed=seed)
    readers = [UserFactory(roles=["md"]) for _ in range(3)]
    steps = {"lease": 0, "ahead": 0, "decide": 0, "skip": 0, "lapse": 0}
    for _ in range(45):
        reader = rng.choice(readers)
        held = list(
            ReviewTask.objects.filter(
                stage=stage, reader=reader, status=ReviewTask.Status.LEASED
            ).order_by("id")
        )
        step = rng.choice(["lease", "ahead", "decide", "decide", "skip", "lapse"])
        if step == "lease":
            task_lease_next(stage=stage, reader=reader)
        elif step == "ahead" and held:
            task_lease_next(stage=stage, reader=reader, skip=held[0].pk)
        elif step == "decide" and held:
            pick_record(task=held[0], reader=reader, position=1, idempotency_key=str(uuid.uuid4()))
        elif step == "skip" and held:
            case_flag(
                token=held[0].token,
                reader=reader,
                reason=CaseFlag.Reason.values[0],
                comment="hard to read",
                idempotency_key=str(uuid.uuid4()),
                skip=True,
            )
        elif step == "lapse" and held:
            ReviewTask.objects.filter(pk=held[0].pk).update(
                lease_expires_at=timezone.now() - timedelta(seconds=1)
            )
        else:
            continue
        steps[step] += 1
        for someone in readers:
            assert shown(stage, someone) == recount(stage, someone), (step, someone.username)
    assert all(steps.values()), f"every kind of step was taken: {steps}"


def test_remaining_is_the_number_of_cases_the_reader_is_then_given():
    stage = review_stage(n_cases=6, n_networks=2)
    first, second, third = (UserFactory(roles=["md"]) for _ in range(3))
    # Two other readers hold three cases; the lease of one runs out.
    a = task_lease_next(stage=stage, reader=second)
    task_lease_next(stage=stage, reader=second, skip=a.pk)
    task_lease_next(stage=stage, reader=third)
    ReviewTask.objects.filter(pk=a.pk).update(lease_expires_at=timezone.now() - timedelta(1))
    mine = task_lease_next(stage=stage, reader=first)
    case_flag(
        token=mine.token,
        reader=first,
        reason=CaseFlag.Reason.values[0],
        comment="hard to read",
        idempotency_key=str(uuid.uuid4()),
        skip=True,
    )
    done, remaining = shown(stage, first)
    assert (done, remaining) == recount(stage, first) == (0, 3), (
        "6 cases: 2 held by others, 1 skipped"
    )
    given = 0
    while (task := task_lease_next(stage=stage, reader=first)) is not None:
        pick_record(task=task, reader=first, position=1, idempotency_key=str(uuid.uuid4()))
        given += 1
    assert given == remaining
    assert shown(stage, first) == (3, 0)


def test_adjudication_progress_leaves_out_the_cases_the_senior_read():
    stage = review_stage(n_cases=3, readers_per_case=2, n_networks=2)
    senior = UserFactory(roles=["md", "senior_md"])
    others = [UserFactory(roles=["md"]) for _ in range(2)]
    # Each reader picks a given candidate (by its rank among the case's candidates, whatever
    # its position on their screen): the senior reads one case and disagrees there, the two
    # other readers disagree on the rest.
    for reader, rank in ((senior, 1), (others[0], 0), (others[1], 1)):
        while (task := task_lease_next(stage=stage, reader=reader)) is not None:
            order = list(task.candidate_order)
            position = order.index(sorted(order)[rank]) + 1
            pick_record(
                task=task, reader=reader, position=position, idempotency_key=str(uuid.uuid4())
            )
            if reader is senior:
                break
    kind = ReviewTask.Kind.ADJUDICATION
    opened = ReviewTask.objects.filter(stage=stage, kind=kind).count()
    assert opened == 3, "every case's two readers disagreed"
    assert shown(stage, senior, kind) == recount(stage, senior, kind) == (0, 2), (
        "not the case they read themselves"
    )
