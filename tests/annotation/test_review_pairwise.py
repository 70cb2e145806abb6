from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from PIL import Image

from annotation.models import AuditEvent, Decision, GroundTruth, PairwiseRound, ReviewTask, Stage
from annotation.roles import MD
from annotation.services.assignment import task_lease_next
from annotation.services.review import (
    decision_record_drawing,
    decision_undo,
    knockout_state,
    round_record,
    round_undo,
)
from annotation.services.review_errors import (
    InvalidChoice,
    MalformedRequest,
    RoundAlreadyRecorded,
    TaskAlreadyDecided,
)
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db


def key() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def leased():
    stage = review_stage(n_cases=1, mode=Stage.Mode.PAIRWISE, n_networks=3)
    md = UserFactory(roles=[MD])
    return task_lease_next(stage=stage, reader=md), md


def play(task, md, choices):
    results = []
    for choice in choices:
        state = knockout_state(task=task)
        results.append(
            round_record(
                task=task, reader=md, number=state.number, choice=choice, idempotency_key=key()
            )
        )
    return results


def test_a_knockout_over_m_candidates_takes_m_minus_one_rounds_and_the_winner_is_chosen(leased):
    task, md = leased
    order = task.candidate_order
    assert len(order) == 4
    first = knockout_state(task=task)
    assert {first.left, first.right} == {order[0], order[1]}
    results = play(task, md, ["A", "B", "A"])
    rounds = list(PairwiseRound.objects.filter(task=task).order_by("number"))
    assert [r.number for r in rounds] == [1, 2, 3]
    # The winner of each round meets the next challenger in the stored order.
    for previous, current, challenger in zip(rounds[:-1], rounds[1:], order[2:], strict=True):
        assert {current.left_id, current.right_id} == {previous.winner_id, challenger}
    assert [r.winner_id for r in rounds] == [
        rounds[0].left_id,
        rounds[1].right_id,
        rounds[2].left_id,
    ]
    decision = results[-1].decision
    assert [r.decision for r in results[:-1]] == [None, None]
    assert (decision.outcome, decision.candidate_id, decision.position) == (
        "chose",
        rounds[2].winner_id,
        1,
    )
    assert GroundTruth.objects.get(radiograph=task.radiograph).mask_id == decision.mask_id


def test_the_pair_shows_the_same_way_round_after_a_reload(leased):
    task, md = leased
    play(task, md, ["A"])
    assert knockout_state(task=task) == knockout_state(task=task)


def test_a_retried_round_returns_the_stored_round_and_a_second_tab_changes_nothing(leased):
    task, md = leased
    k = key()
    first = round_record(task=task, reader=md, number=1, choice="A", idempotency_key=k)
    again = round_record(task=task, reader=md, number=1, choice="A", idempotency_key=k)
    assert again.replayed and again.round.pk == first.round.pk
    with pytest.raises(RoundAlreadyRecorded):
        round_record(task=task, reader=md, number=1, choice="B", idempotency_key=key())
    with pytest.raises(InvalidChoice, match="not the current round"):
        round_record(task=task, reader=md, number=3, choice="B", idempotency_key=key())
    assert PairwiseRound.objects.count() == 1


def test_after_the_last_round_no_more_rounds_or_drawings_are_taken(leased):
    task, md = leased
    play(task, md, ["B", "B", "B"])
    with pytest.raises(TaskAlreadyDecided):
        round_record(task=task, reader=md, number=4, choice="A", idempotency_key=key())
    assert Decision.objects.count() == 1


def test_neither_ends_the_knockout_and_only_then_a_drawing_is_taken(leased):
    task, md = leased
    pixels = np.zeros((task.radiograph.work_height, task.radiograph.work_width), np.uint8)
    pixels[10:20, 10:30] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    with pytest.raises(InvalidChoice, match="neither"):
        decision_record_drawing(task=task, reader=md, png=buffer.getvalue(), idempotency_key=key())
    play(task, md, ["A", "neither"])
    state = knockout_state(task=task)
    assert state.neither and state.number is None
    with pytest.raises(InvalidChoice, match="draw the mask"):
        round_record(task=task, reader=md, number=3, choice="A", idempotency_key=key())
    decision = decision_record_drawing(
        task=task, reader=md, png=buffer.getvalue(), idempotency_key=key(), time_on_screen_ms=500
    ).decision
    assert decision.outcome == "drew"
    rounds = PairwiseRound.objects.filter(task=task).order_by("number")
    assert [r.winner_id is None for r in rounds] == [False, True]


def test_undo_takes_back_the_last_pick_and_shows_the_same_pair(leased):
    task, md = leased
    play(task, md, ["A", "A"])
    before = knockout_state(task=task)
    play(task, md, ["B"])
    decision_undo(stage=task.stage, reader=md)
    assert knockout_state(task=task) == before
    assert PairwiseRound.objects.filter(task=task).count() == 2
    results = play(task, md, ["A"])
    assert results[0].decision.candidate_id == before.left


@pytest.mark.parametrize("choice", ["C", "", "left"])
def test_an_unknown_choice_is_refused(leased, choice):
    task, md = leased
    with pytest.raises(MalformedRequest, match="choice must be one of"):
        round_record(task=task, reader=md, number=1, choice=choice, idempotency_key=key())


def two_cases():
    stage = review_stage(n_cases=2, mode=Stage.Mode.PAIRWISE, n_networks=3)
    md = UserFactory(roles=[MD])
    return task_lease_next(stage=stage, reader=md), md


def test_round_undo_takes_back_the_last_round_of_this_case_only():
    first, md = two_cases()
    earlier = play(first, md, ["A", "B", "A"])[-1].decision
    assert earlier is not None
    task = task_lease_next(stage=first.stage, reader=md)
    assert task.pk != first.pk
    play(task, md, ["A"])
    before = knockout_state(task=task)
    played = play(task, md, ["B"])[0].round
    result = round_undo(task=task, reader=md, number=2)
    # The pair of round 2 is shown again, the same way round.
    assert not result.replayed and result.knockout == before
    assert knockout_state(task=task) == before
    assert not PairwiseRound.objects.filter(pk=played.pk).exists()
    assert PairwiseRound.objects.filter(task=task).count() == 1
    # The earlier case's decision, rounds and accepted mask are untouched.
    earlier.refresh_from_db()
    assert earlier.revoked_at is None
    assert PairwiseRound.objects.filter(task=first).count() == 3
    assert GroundTruth.objects.filter(radiograph=first.radiograph).exists()
    assert ReviewTask.objects.get(pk=first.pk).status == ReviewTask.Status.DONE
    event = AuditEvent.objects.get(action="round.undo")
    assert event.old["round"] == 2 and event.old["winner"] == played.winner_id
    # Then the round before it, back to the first pair.
    round_undo(task=task, reader=md, number=1)
    assert knockout_state(task=task).number == 1
    assert not PairwiseRound.objects.filter(task=task).exists()


def test_a_retried_round_undo_takes_back_nothing_more():
    task, md = two_cases()
    play(task, md, ["A", "B"])
    round_undo(task=task, reader=md, number=2)
    again = round_undo(task=task, reader=md, number=2)
    assert again.replayed and PairwiseRound.objects.filter(task=task).count() == 1
    play(task, md, ["A"])  # round 2 again
    with pytest.raises(InvalidChoice, match="not the last round"):
        round_undo(task=task, reader=md, number=1)
    assert PairwiseRound.objects.filter(task=task).count() == 2


def test_round_undo_after_neither_goes_back_to_the_pair_and_a_decided_case_is_refused():
    task, md = two_cases()
    play(task, md, ["A"])
    pair = knockout_state(task=task)
    play(task, md, ["neither"])
    assert knockout_state(task=task).neither
    round_undo(task=task, reader=md, number=2)
    assert knockout_state(task=task) == pair
    decided = play(task, md, ["A", "A"])[-1].decision
    assert decided is not None
    with pytest.raises(TaskAlreadyDecided):
        round_undo(task=task, reader=md, number=3)
    assert Decision.objects.get(pk=decided.pk).revoked_at is None
