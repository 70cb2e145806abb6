"""Real threads, real transactions: retries, double clicks and racing readers.

Run on PostgreSQL (CI) and SQLite; each thread has its own database connection.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection

from annotation.models import Decision, PairwiseRound, ReviewTask, Stage
from annotation.roles import MD
from annotation.services.assignment import task_lease_next
from annotation.services.review import decision_record, round_record
from annotation.services.review_errors import RoundAlreadyRecorded, TaskAlreadyDecided
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _roles():
    """Transactional tests flush the tables, the role groups of the data migration included."""
    from django.contrib.auth.models import Group

    from annotation.roles import ALL_ROLES

    for name in ALL_ROLES:
        Group.objects.get_or_create(name=name)


def hammer(n_threads: int, work):
    """Run work(i) in n threads released at once; returns what each returned or raised."""
    barrier = threading.Barrier(n_threads)
    results: list = [None] * n_threads

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_retries_and_racing_tabs_on_one_task_yield_exactly_one_decision():
    stage = review_stage(n_cases=1)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    shared_key = str(uuid.uuid4())
    # Half the threads retry one request (same key), half are other tabs (fresh keys).
    keys = [shared_key if i % 2 == 0 else str(uuid.uuid4()) for i in range(8)]

    results = hammer(
        8,
        lambda i: (
            decision_record(
                task=task, reader=md, position=1 + i % 5, idempotency_key=keys[i]
            ).decision
        ),
    )
    decision = Decision.objects.get()  # exactly one row
    for key, result in zip(keys, results, strict=True):
        if isinstance(result, Decision):
            assert result.pk == decision.pk
        else:
            assert isinstance(result, TaskAlreadyDecided), result
            assert result.decision.pk == decision.pk
            assert key != shared_key or decision.idempotency_key != shared_key
    # Every retry of the winning key got the stored row back.
    winners = [r for r in results if isinstance(r, Decision)]
    assert winners and all(r.idempotency_key == decision.idempotency_key for r in winners)


def test_racing_tabs_record_one_pairwise_round():
    stage = review_stage(n_cases=1, mode=Stage.Mode.PAIRWISE, n_networks=2)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    results = hammer(
        6,
        lambda i: round_record(
            task=task, reader=md, number=1, choice="AB"[i % 2], idempotency_key=str(uuid.uuid4())
        ),
    )
    assert PairwiseRound.objects.filter(task=task).count() == 1
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, RoundAlreadyRecorded) for r in results if isinstance(r, Exception))


def test_readers_leasing_at_once_each_get_a_different_task():
    stage = review_stage(n_cases=6)
    readers = [UserFactory(roles=[MD]) for _ in range(6)]
    results = hammer(6, lambda i: task_lease_next(stage=stage, reader=readers[i]))
    assert all(isinstance(r, ReviewTask) for r in results), results
    assert len({r.pk for r in results}) == 6
    for reader, task in zip(readers, results, strict=True):
        assert ReviewTask.objects.get(pk=task.pk).reader == reader


def test_one_reader_asking_for_next_twelve_times_at_once_gets_one_case():
    stage = review_stage(n_cases=6)
    md = UserFactory(roles=[MD])
    results = hammer(12, lambda i: task_lease_next(stage=stage, reader=md))
    assert all(isinstance(r, ReviewTask) for r in results), results
    assert len({r.pk for r in results}) == 1
    assert ReviewTask.objects.filter(reader=md, status=ReviewTask.Status.LEASED).count() == 1
    # Other readers still get cases of their own.
    other = UserFactory(roles=[MD])
    assert task_lease_next(stage=stage, reader=other).pk != results[0].pk


def test_racing_retries_of_one_pick_say_replayed_exactly_once_false():
    stage = review_stage(n_cases=2)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    shared_key = str(uuid.uuid4())
    results = hammer(
        8,
        lambda i: decision_record(task=task, reader=md, position=1, idempotency_key=shared_key),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert [r.replayed for r in results].count(False) == 1
    assert {r.decision.pk for r in results} == {Decision.objects.get().pk}


def test_racing_retries_of_one_pick_through_the_api_answer_201_once():
    from rest_framework.test import APIClient

    stage = review_stage(n_cases=2)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    body = {"position": 1, "idempotency_key": str(uuid.uuid4())}

    def pick(_i: int):
        client = APIClient()
        client.force_authenticate(md)
        answer = client.post(f"/api/review/tasks/{task.token}/pick/", body, format="json")
        return answer.status_code, answer.json()["replayed"]

    results = hammer(6, pick)
    assert sorted(results) == [(200, True)] * 5 + [(201, False)], results


def test_racing_retries_of_one_skip_store_one_flag_and_all_get_it():
    from annotation.models import CaseFlag
    from annotation.services.flags import case_flag

    stage = review_stage(n_cases=2)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    key = str(uuid.uuid4())
    results = hammer(
        6,
        lambda i: case_flag(
            token=task.token, reader=md, reason="unsure", idempotency_key=key, skip=True
        ),
    )
    assert all(not isinstance(r, Exception) for r in results), results
    assert sorted(r.replayed for r in results) == [False] + [True] * 5
    assert CaseFlag.objects.count() == 1
    task.refresh_from_db()
    assert task.reader is None and task.status == ReviewTask.Status.OPEN
