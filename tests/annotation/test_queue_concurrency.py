"""Racing readers on an informative-first queue: each case is leased once, in the stage's
order. Real threads and transactions (PostgreSQL in CI, SQLite otherwise)."""

from __future__ import annotations

from collections import Counter

import pytest

from annotation.models import CaseDisagreement, ReviewTask, Stage
from annotation.roles import MD
from annotation.services.assignment import task_lease_next
from tests.annotation.test_review_concurrency import hammer
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _roles():
    """Transactional tests flush the tables, the role groups of the data migration included."""
    from django.contrib.auth.models import Group

    from annotation.roles import ALL_ROLES

    for name in ALL_ROLES:
        Group.objects.get_or_create(name=name)


def test_racing_readers_on_an_informative_queue_never_share_a_case():
    stage = review_stage(n_cases=6, readers_per_case=2)
    Stage.objects.filter(pk=stage.pk).update(queue_order=Stage.QueueOrder.INFORMATIVE)
    stage.refresh_from_db()
    # The most disagreeing cases are the ones everybody wants first.
    records = list(CaseDisagreement.objects.filter(stage=stage).order_by("radiograph_id"))
    for value, record in zip((0.2, 0.9, 0.1, 0.8, 0.3, 0.7), records, strict=True):
        record.mean_pairwise_dice = value
        record.save()
    readers = [UserFactory(roles=[MD]) for _ in range(14)]

    results = hammer(14, lambda i: task_lease_next(stage=stage, reader=readers[i]))

    leased = [r for r in results if isinstance(r, ReviewTask)]
    assert all(r is None or isinstance(r, ReviewTask) for r in results), results
    assert len(leased) == 12  # two slots per case, six cases; two readers find the queue empty
    assert len({t.pk for t in leased}) == 12  # no task leased twice
    per_case = Counter(t.radiograph_id for t in leased)
    assert set(per_case.values()) == {2}
    rows = ReviewTask.objects.filter(stage=stage)
    assert rows.filter(status=ReviewTask.Status.LEASED).count() == 12
    # Each task is held by the reader who got it, and no reader holds two slots of a case.
    for task, reader in zip(results, readers, strict=True):
        if isinstance(task, ReviewTask):
            assert rows.get(pk=task.pk).reader_id == reader.pk
    assert (
        rows.values("radiograph_id", "reader_id").distinct().count()
        == rows.exclude(reader=None).count()
    )


def test_sequential_readers_on_an_informative_queue_get_the_first_slots_in_order():
    stage = review_stage(n_cases=3, readers_per_case=2)
    Stage.objects.filter(pk=stage.pk).update(queue_order=Stage.QueueOrder.INFORMATIVE)
    stage.refresh_from_db()
    records = list(CaseDisagreement.objects.filter(stage=stage).order_by("radiograph_id"))
    for value, record in zip((0.6, 0.2, 0.4), records, strict=True):
        record.mean_pairwise_dice = value
        record.save()
    served = [task_lease_next(stage=stage, reader=UserFactory(roles=[MD])) for _ in range(6)]
    by_dice = [r.radiograph_id for r in sorted(records, key=lambda r: r.mean_pairwise_dice)]
    # Every case's first reader before any second reader, most disagreeing first.
    assert [t.radiograph_id for t in served] == by_dice * 2
    assert [t.slot for t in served] == [0, 0, 0, 1, 1, 1]
