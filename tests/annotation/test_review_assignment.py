from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import DrawingDraft, PairwiseRound, ReviewTask, Stage
from annotation.roles import MD
from annotation.services.assignment import review_tasks_create, task_held, task_lease_next
from annotation.services.review import decision_record, round_record
from annotation.services.review_errors import NotYourTask, ReviewError
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db


def key() -> str:
    return str(uuid.uuid4())


def test_each_case_gets_one_task_per_reader_slot_with_a_stored_order():
    stage = review_stage(n_cases=3, readers_per_case=2)
    tasks = ReviewTask.objects.filter(stage=stage)
    assert tasks.count() == 6
    for task in tasks:
        candidate_ids = set(
            stage.candidates.filter(radiograph=task.radiograph).values_list("id", flat=True)
        )
        assert sorted(task.candidate_order) == sorted(candidate_ids)
        assert len(candidate_ids) == 5  # manual + 4 networks, all distinct
    # Running it again adds nothing.
    assert review_tasks_create(stage=stage) == 0


def test_a_reader_gets_their_current_task_back_until_they_decide():
    stage = review_stage(n_cases=2)
    md = UserFactory(roles=[MD])
    first = task_lease_next(stage=stage, reader=md)
    again = task_lease_next(stage=stage, reader=md)
    assert first.pk == again.pk
    assert again.status == ReviewTask.Status.LEASED and again.reader == md
    decision_record(task=again, reader=md, position=1, idempotency_key=key())
    nxt = task_lease_next(stage=stage, reader=md)
    assert nxt.pk != first.pk
    decision_record(task=nxt, reader=md, position=2, idempotency_key=key())
    assert task_lease_next(stage=stage, reader=md) is None


def test_two_readers_never_hold_the_same_task():
    stage = review_stage(n_cases=2)
    a, b = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    ta = task_lease_next(stage=stage, reader=a)
    tb = task_lease_next(stage=stage, reader=b)
    assert ta.pk != tb.pk
    assert task_lease_next(stage=stage, reader=UserFactory(roles=[MD])) is None


def test_a_reader_never_gets_the_same_case_twice_in_a_stage():
    stage = review_stage(n_cases=2, readers_per_case=2)
    md = UserFactory(roles=[MD])
    seen = []
    while (task := task_lease_next(stage=stage, reader=md)) is not None:
        seen.append(task.radiograph_id)
        decision_record(task=task, reader=md, position=1, idempotency_key=key())
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 2
    # The second slots go to someone else.
    other = UserFactory(roles=[MD])
    assert task_lease_next(stage=stage, reader=other).slot == 1


def test_an_abandoned_lease_goes_to_the_next_reader_with_nothing_of_the_first():
    stage = review_stage(n_cases=1, mode=Stage.Mode.PAIRWISE)
    first, second = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=first)
    round_record(task=task, reader=first, number=1, choice="A", idempotency_key=key())
    DrawingDraft.objects.create(task=task, reader=first, png=b"x", updated_at=timezone.now())
    old_token = task.token
    assert task_lease_next(stage=stage, reader=second) is None  # still leased
    ReviewTask.objects.filter(pk=task.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    taken = task_lease_next(stage=stage, reader=second)
    assert taken.pk == task.pk and taken.reader == second
    assert taken.token != old_token
    assert not PairwiseRound.objects.filter(task=task).exists()
    assert not DrawingDraft.objects.filter(task=task).exists()
    with pytest.raises(NotYourTask):
        task_held(token=old_token, reader=first)
    with pytest.raises(NotYourTask):
        round_record(task=task, reader=first, number=1, choice="B", idempotency_key=key())


def test_an_expired_lease_nobody_took_stays_with_its_reader():
    stage = review_stage(n_cases=1)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    ReviewTask.objects.filter(pk=task.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    again = task_lease_next(stage=stage, reader=md)
    assert again.pk == task.pk and again.lease_expires_at > timezone.now()


def test_a_stage_not_in_review_hands_out_nothing():
    stage = review_stage(n_cases=1)
    stage.status = Stage.Status.CLOSED
    stage.save()
    with pytest.raises(ReviewError, match="not open for review"):
        task_lease_next(stage=stage, reader=UserFactory(roles=[MD]))
