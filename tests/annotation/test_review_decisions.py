from __future__ import annotations

import io
import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone
from PIL import Image

from annotation.models import (
    Candidate,
    Decision,
    DrawingDraft,
    GroundTruth,
    Mask,
    ReviewTask,
    Stage,
)
from annotation.roles import MD
from annotation.services.assignment import task_lease_next
from annotation.services.drafts import draft_save
from annotation.services.review import (
    decision_record,
    decision_record_drawing,
    decision_undo,
)
from annotation.services.review_errors import (
    IdempotencyKeyReused,
    InvalidChoice,
    InvalidMask,
    MalformedRequest,
    NotYourTask,
    ReviewError,
    TaskAlreadyDecided,
)
from annotation.storage import blob_read
from cxrio import masks as maskio
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db


def key() -> str:
    return str(uuid.uuid4())


def png_of(pixels: np.ndarray, *, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8) * 255).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def square(task: ReviewTask, *, size: int = 10) -> np.ndarray:
    pixels = np.zeros((task.radiograph.work_height, task.radiograph.work_width), bool)
    pixels[5 : 5 + size, 7 : 7 + size] = True
    return pixels


@pytest.fixture
def leased():
    stage = review_stage(n_cases=2)
    md = UserFactory(roles=[MD])
    return task_lease_next(stage=stage, reader=md), md


def test_picking_a_position_records_that_candidate_and_its_position(leased):
    task, md = leased
    decision = decision_record(
        task=task, reader=md, position=3, idempotency_key=key(), time_on_screen_ms=1234
    ).decision
    assert decision.candidate_id == task.candidate_order[2]
    assert decision.mask_id == decision.candidate.mask_id
    assert (decision.outcome, decision.position, decision.time_on_screen_ms) == ("chose", 3, 1234)
    task.refresh_from_db()
    assert task.status == ReviewTask.Status.DONE and task.completed_at is not None


def test_a_retry_with_the_same_key_returns_the_stored_decision(leased):
    task, md = leased
    k = key()
    first = decision_record(task=task, reader=md, position=1, idempotency_key=k).decision
    again = decision_record(task=task, reader=md, position=1, idempotency_key=k).decision
    assert again.pk == first.pk
    assert Decision.objects.count() == 1


def test_a_second_tab_with_a_new_key_gets_the_existing_decision_not_a_second(leased):
    task, md = leased
    first = decision_record(task=task, reader=md, position=1, idempotency_key=key()).decision
    with pytest.raises(TaskAlreadyDecided) as exc:
        decision_record(task=task, reader=md, position=2, idempotency_key=key())
    assert exc.value.decision.pk == first.pk
    assert Decision.objects.get().position == 1


def test_a_key_already_used_for_another_case_is_refused(leased):
    task, md = leased
    k = key()
    decision_record(task=task, reader=md, position=1, idempotency_key=k)
    other = task_lease_next(stage=task.stage, reader=md)
    with pytest.raises(IdempotencyKeyReused):
        decision_record(task=other, reader=md, position=1, idempotency_key=k)
    assert Decision.objects.count() == 1


@pytest.mark.parametrize("position", [0, 6, "1", None])
def test_a_position_outside_the_screen_is_refused(leased, position):
    task, md = leased
    with pytest.raises(InvalidChoice, match="position must be 1 to 5"):
        decision_record(task=task, reader=md, position=position, idempotency_key=key())
    assert not Decision.objects.exists()


def test_a_missing_or_malformed_key_is_refused(leased):
    task, md = leased
    with pytest.raises(MalformedRequest, match="request key"):
        decision_record(task=task, reader=md, position=1, idempotency_key="x")


def test_someone_elses_task_cannot_be_decided(leased):
    task, _md = leased
    with pytest.raises(NotYourTask):
        decision_record(
            task=task, reader=UserFactory(roles=[MD]), position=1, idempotency_key=key()
        )


def test_after_losing_the_lease_to_another_reader_the_decision_is_refused(leased):
    task, md = leased
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(1))
    other = UserFactory(roles=[MD])
    # The other reader's first pick is the oldest available task: the other case first.
    while (t := task_lease_next(stage=task.stage, reader=other)).pk != task.pk:
        decision_record(task=t, reader=other, position=1, idempotency_key=key())
    with pytest.raises(NotYourTask, match="another reader"):
        decision_record(task=task, reader=md, position=1, idempotency_key=key())


def test_a_drawn_mask_is_stored_as_a_one_bit_png_with_the_reader_as_author(leased):
    task, md = leased
    pixels = square(task)
    decision = decision_record_drawing(
        task=task, reader=md, png=png_of(pixels), idempotency_key=key(), time_on_screen_ms=9000
    ).decision
    assert decision.outcome == Decision.Outcome.DREW and decision.candidate is None
    # The drawing as drawn, kept as the original of the outline-normalised mask that
    # adjudicators see and that is accepted.
    mask = decision.mask.normalised_from
    assert (mask.kind, mask.author, mask.area) == (Mask.Kind.DRAWN, md, 100)
    stored = blob_read(mask.png.name)
    assert Image.open(io.BytesIO(stored)).mode == "1"
    assert (maskio.mask_from_png(stored) == pixels).all()
    assert (decision.mask.kind, decision.mask.author) == (Mask.Kind.DRAWN, md)
    truth = GroundTruth.objects.get(radiograph=task.radiograph)
    assert (truth.source, truth.method, truth.mask_id) == ("drawn", "single", decision.mask_id)


def test_refining_a_candidate_records_the_candidate_and_a_refined_mask(leased):
    task, md = leased
    base = Candidate.objects.get(pk=task.candidate_order[1])
    pixels = maskio.mask_from_png(blob_read(base.mask.png.name)) | square(task, size=3)
    decision = decision_record_drawing(
        task=task, reader=md, png=png_of(pixels), base=base, idempotency_key=key()
    ).decision
    assert (decision.outcome, decision.candidate_id, decision.position) == ("refined", base.pk, 2)
    assert decision.mask.kind == Mask.Kind.REFINED


def test_a_refinement_that_changed_nothing_counts_as_choosing_the_candidate(leased):
    task, md = leased
    base = Candidate.objects.get(pk=task.candidate_order[0])
    same = maskio.mask_from_png(blob_read(base.mask.png.name))
    decision = decision_record_drawing(
        task=task, reader=md, png=png_of(same), base=base, idempotency_key=key()
    ).decision
    assert (decision.outcome, decision.candidate_id, decision.mask_id) == (
        "chose",
        base.pk,
        base.mask_id,
    )


def test_drawings_of_the_wrong_size_or_not_binary_are_refused_and_change_nothing(leased):
    task, md = leased
    wrong = np.zeros((task.radiograph.work_height + 1, task.radiograph.work_width), bool)
    wrong[3:9, 3:9] = True
    with pytest.raises(InvalidMask, match=r"mask is 64×49 but the image is 64×48"):
        decision_record_drawing(task=task, reader=md, png=png_of(wrong), idempotency_key=key())
    grey = (square(task).astype(np.uint8) * 128).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, "PNG")
    with pytest.raises(InvalidMask, match="not binary"):
        decision_record_drawing(task=task, reader=md, png=buffer.getvalue(), idempotency_key=key())
    with pytest.raises(InvalidMask, match="cannot be used"):
        decision_record_drawing(task=task, reader=md, png=b"not a png", idempotency_key=key())
    assert not Decision.objects.exists()
    assert not Mask.objects.filter(kind__in=["drawn", "refined"]).exists()


def test_an_empty_drawing_needs_the_reader_to_state_no_infection(leased):
    task, md = leased
    empty = np.zeros((task.radiograph.work_height, task.radiograph.work_width), bool)
    with pytest.raises(InvalidMask, match="empty"):
        decision_record_drawing(task=task, reader=md, png=png_of(empty), idempotency_key=key())
    decision = decision_record_drawing(
        task=task, reader=md, png=png_of(empty), no_infection=True, idempotency_key=key()
    ).decision
    assert decision.mask.area == 0


def test_deciding_removes_the_readers_draft(leased):
    task, md = leased
    draft_save(task=task, reader=md, png=png_of(square(task)))
    assert DrawingDraft.objects.count() == 1
    decision_record_drawing(task=task, reader=md, png=png_of(square(task)), idempotency_key=key())
    assert DrawingDraft.objects.count() == 0


def test_undo_gives_the_case_back_and_withdraws_its_accepted_mask(leased):
    task, md = leased
    first = decision_record(task=task, reader=md, position=1, idempotency_key=key()).decision
    assert GroundTruth.objects.filter(radiograph=task.radiograph).exists()
    back = decision_undo(stage=task.stage, reader=md).task
    assert back.pk == task.pk and back.status == ReviewTask.Status.LEASED
    first.refresh_from_db()
    assert first.revoked_at is not None
    assert not GroundTruth.objects.filter(radiograph=task.radiograph).exists()
    # The reader is sent back to that case and decides again.
    assert task_lease_next(stage=task.stage, reader=md).pk == task.pk
    second = decision_record(task=back, reader=md, position=2, idempotency_key=key()).decision
    assert GroundTruth.objects.get(radiograph=task.radiograph).mask_id == second.mask_id
    assert Decision.objects.filter(revoked_at__isnull=True).count() == 1


def test_undo_with_nothing_decided_says_so(leased):
    task, md = leased
    with pytest.raises(ReviewError, match="no decision of yours"):
        decision_undo(stage=task.stage, reader=md)


def test_undo_is_refused_once_the_stage_is_closed(leased):
    task, md = leased
    decision_record(task=task, reader=md, position=1, idempotency_key=key())
    task.stage.status = "closed"
    task.stage.save()
    with pytest.raises(ReviewError, match="closed"):
        decision_undo(stage=task.stage, reader=md)
    assert Decision.objects.get().revoked_at is None


def test_a_closed_stage_takes_no_more_decisions(leased):
    task, md = leased
    Stage.objects.filter(pk=task.stage_id).update(status=Stage.Status.CLOSED)
    task.refresh_from_db()
    with pytest.raises(ReviewError, match="closed: it takes no more decisions"):
        decision_record(task=task, reader=md, position=1, idempotency_key=key())
    assert not Decision.objects.exists()
