from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from django.db import transaction
from PIL import Image

from annotation.models import Candidate, Decision, GroundTruth, Mask, ModelVersion, ReviewTask
from annotation.roles import MD, SENIOR_MD
from annotation.selectors.statistics import stage_statistics
from annotation.services.assignment import task_lease_next
from annotation.services.candidates import candidates_offer
from annotation.services.consensus import adjudication_options
from annotation.services.review import (
    adjudication_record,
    adjudication_record_drawing,
    decision_record,
    decision_record_drawing,
    decision_undo,
)
from annotation.services.review_errors import ReviewError
from annotation.storage import blob_read
from cxrio import masks as maskio
from mlworker.staple import staple
from tests.factories import UserFactory, mask_of, review_stage

pytestmark = pytest.mark.django_db


def key() -> str:
    return str(uuid.uuid4())


def pick(stage, reader, candidate_id):
    """The reader leases their next task and picks the given candidate, wherever it is shown."""
    task = task_lease_next(stage=stage, reader=reader)
    position = task.candidate_order.index(candidate_id) + 1
    result = decision_record(task=task, reader=reader, position=position, idempotency_key=key())
    return result.decision


def candidates_by_kind(stage):
    manual = Candidate.objects.get(stage=stage, mask__kind=Mask.Kind.MANUAL)
    networks = list(
        Candidate.objects.filter(stage=stage, mask__kind=Mask.Kind.NETWORK).order_by("id")
    )
    return manual, networks


def test_one_reader_their_choice_is_accepted_with_its_network_as_provenance():
    stage = review_stage(n_cases=1)
    _manual, networks = candidates_by_kind(stage)
    md = UserFactory(roles=[MD])
    decision = pick(stage, md, networks[1].pk)
    truth = GroundTruth.objects.get()
    assert (truth.mask_id, truth.stage_id, truth.source, truth.method) == (
        decision.mask_id,
        stage.pk,
        "network",
        "single",
    )
    assert list(truth.model_versions.all()) == [networks[1].mask.model_version]
    assert list(truth.readers.all()) == [md] and truth.agreement == 1.0


def test_a_majority_on_the_same_candidate_is_accepted():
    stage = review_stage(n_cases=1, readers_per_case=3)
    manual, networks = candidates_by_kind(stage)
    readers = [UserFactory(roles=[MD]) for _ in range(3)]
    pick(stage, readers[0], manual.pk)
    assert not GroundTruth.objects.exists()  # waits for every reader
    pick(stage, readers[1], networks[0].pk)
    pick(stage, readers[2], manual.pk)
    truth = GroundTruth.objects.get()
    assert (truth.mask_id, truth.source, truth.method) == (manual.mask_id, "manual", "majority")
    assert truth.agreement == pytest.approx(2 / 3)
    assert set(truth.readers.all()) == set(readers)
    assert not ReviewTask.objects.filter(kind="adjudication").exists()


def test_disagreement_goes_to_a_senior_who_sees_the_choices_and_settles_the_case():
    stage = review_stage(n_cases=1, readers_per_case=2)
    manual, networks = candidates_by_kind(stage)
    first, second = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    pick(stage, first, manual.pk)
    pick(stage, second, networks[2].pk)
    assert not GroundTruth.objects.exists()
    senior = UserFactory(roles=[SENIOR_MD])
    task = task_lease_next(stage=stage, reader=senior, kind=ReviewTask.Kind.ADJUDICATION)
    options = adjudication_options(task=task)
    assert sorted(d.candidate_id for d, _count in options) == sorted([manual.pk, networks[2].pk])
    assert [count for _d, count in options] == [1, 1]
    position = next(i for i, (d, _c) in enumerate(options, 1) if d.candidate_id == networks[2].pk)
    truth = adjudication_record(
        task=task, reader=senior, position=position, idempotency_key=key()
    ).truth
    assert (truth.mask_id, truth.source, truth.method, truth.agreement) == (
        networks[2].mask_id,
        "network",
        "adjudication",
        0.5,
    )
    assert set(truth.readers.all()) == {first, second, senior}
    # An adjudicated case is final: its readers can no longer undo.
    with pytest.raises(ReviewError, match="senior MD has settled"):
        decision_undo(stage=stage, reader=second)


def test_two_readers_who_each_drew_are_adjudicated_between_their_drawings():
    stage = review_stage(n_cases=1, readers_per_case=2)
    readers = [UserFactory(roles=[MD]), UserFactory(roles=[MD])]
    for offset, reader in enumerate(readers):
        task = task_lease_next(stage=stage, reader=reader)
        pixels = np.zeros((48, 64), np.uint8)
        pixels[5:20, 5 + offset : 25 + offset] = 255
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        decision_record_drawing(
            task=task, reader=reader, png=buffer.getvalue(), idempotency_key=key()
        )
    task = ReviewTask.objects.get(kind="adjudication")
    assert len(task.candidate_order) == 2
    senior = UserFactory(roles=[SENIOR_MD])
    task = task_lease_next(stage=stage, reader=senior, kind="adjudication")
    truth = adjudication_record(task=task, reader=senior, position=1, idempotency_key=key()).truth
    chosen = Decision.objects.get(pk=task.candidate_order[0])
    assert (truth.mask_id, truth.source) == (chosen.mask_id, "drawn")


def test_a_senior_never_adjudicates_a_case_they_read():
    stage = review_stage(n_cases=1, readers_per_case=2)
    manual, networks = candidates_by_kind(stage)
    both = UserFactory(roles=[MD, SENIOR_MD])
    pick(stage, both, manual.pk)
    pick(stage, UserFactory(roles=[MD]), networks[0].pk)
    assert task_lease_next(stage=stage, reader=both, kind="adjudication") is None
    assert task_lease_next(stage=stage, reader=UserFactory(roles=[SENIOR_MD]), kind="adjudication")


def test_undo_before_adjudication_withdraws_the_adjudication_until_the_reader_decides_again():
    stage = review_stage(n_cases=1, readers_per_case=2)
    manual, networks = candidates_by_kind(stage)
    first, second = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    pick(stage, first, manual.pk)
    pick(stage, second, networks[0].pk)
    adjudication = ReviewTask.objects.get(kind="adjudication")
    assert adjudication.status == "open"
    decision_undo(stage=stage, reader=second)
    adjudication.refresh_from_db()
    assert adjudication.status == "cancelled"
    assert (
        task_lease_next(stage=stage, reader=UserFactory(roles=[SENIOR_MD]), kind="adjudication")
        is None
    )
    task = task_lease_next(stage=stage, reader=second)
    decision_record(
        task=task,
        reader=second,
        position=task.candidate_order.index(manual.pk) + 1,
        idempotency_key=key(),
    )
    truth = GroundTruth.objects.get()
    assert (truth.mask_id, truth.method, truth.agreement) == (manual.mask_id, "majority", 1.0)


def test_a_candidate_equal_to_the_manual_mask_is_credited_to_it_and_lists_the_network():
    stage = review_stage(n_cases=1, n_networks=1)
    manual, _networks = candidates_by_kind(stage)
    version = ModelVersion.objects.create(
        dataset=stage.dataset, stage=stage, purpose="candidate", arch="fpn", encoder="resnet50"
    )
    from annotation.storage import blob_read
    from cxrio.masks import mask_from_png

    same = mask_of(
        manual.radiograph,
        mask_from_png(blob_read(manual.mask.png.name)),
        kind="network",
        model_version=version,
        stage=stage,
    )
    offered = candidates_offer(stage=stage, radiograph=manual.radiograph, masks=[same])
    assert len(offered) == 2  # no new candidate: the same pixels are offered once
    pick(stage, UserFactory(roles=[MD]), manual.pk)
    truth = GroundTruth.objects.get()
    assert truth.source == "manual"
    assert list(truth.model_versions.all()) == [version]


def png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8) * 255).save(buffer, "PNG")
    return buffer.getvalue()


def disagreeing_case():
    stage = review_stage(n_cases=1, readers_per_case=2)
    manual, networks = candidates_by_kind(stage)
    first, second = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    pick(stage, first, manual.pk)
    pick(stage, second, networks[2].pk)
    senior = UserFactory(roles=[SENIOR_MD])
    task = task_lease_next(stage=stage, reader=senior, kind=ReviewTask.Kind.ADJUDICATION)
    return stage, task, senior, {first, second, senior}


def test_a_senior_who_rejects_both_draws_the_accepted_mask():
    stage, task, senior, everyone = disagreeing_case()
    drawn = np.zeros((48, 64), bool)
    drawn[10:30, 20:40] = True
    key_ = key()
    result = adjudication_record_drawing(
        task=task, reader=senior, png=png_of(drawn), idempotency_key=key_
    )
    truth = result.truth
    assert (truth.source, truth.method, truth.agreement) == ("drawn", "adjudication", 0.0)
    assert truth.mask.kind == "drawn" and truth.mask.author == senior
    assert set(truth.readers.all()) == everyone
    # A retry of the same post stores nothing new.
    again = adjudication_record_drawing(
        task=task, reader=senior, png=png_of(drawn), idempotency_key=key_
    )
    assert again.replayed and Decision.objects.filter(task=task).count() == 1
    assert GroundTruth.objects.count() == 1
    stats = stage_statistics(stage=stage)
    assert stats.adjudicated == 1 and stats.sources == [("drawn", 1)]


def test_a_senior_refines_a_readers_choice_and_an_unchanged_refinement_is_a_pick():
    stage, task, senior, _ = disagreeing_case()
    options = adjudication_options(task=task)
    base, _count = options[0]
    pixels = maskio.mask_from_png(blob_read(base.mask.png.name))
    # Unchanged: the same as picking that option.
    with transaction.atomic():
        sid = transaction.savepoint()
        truth = adjudication_record_drawing(
            task=task, reader=senior, png=png_of(pixels), idempotency_key=key(), base_position=1
        ).truth
        assert truth.mask_id == base.mask_id and truth.agreement == 0.5
        transaction.savepoint_rollback(sid)
    refined = pixels.copy()
    refined[:4, :4] = True
    truth = adjudication_record_drawing(
        task=task, reader=senior, png=png_of(refined), idempotency_key=key(), base_position=1
    ).truth
    assert truth.source == "refined" and truth.mask.kind == "refined"
    assert Decision.objects.get(task=task).candidate_id == base.candidate_id
    # Bad input changes nothing.
    stage2, task2, senior2, _ = disagreeing_case()
    with pytest.raises(ReviewError, match="cannot be empty"):
        adjudication_record_drawing(
            task=task2,
            reader=senior2,
            png=png_of(np.zeros((48, 64), bool)),
            idempotency_key=key(),
            base_position=1,
            no_infection=True,
        )
    with pytest.raises(ReviewError):
        adjudication_record_drawing(
            task=task2, reader=senior2, png=png_of(refined), idempotency_key=key(), base_position=9
        )
    md = UserFactory(roles=[MD])
    with pytest.raises(ReviewError, match="senior MDs"):
        adjudication_record_drawing(
            task=task2, reader=md, png=png_of(refined), idempotency_key=key()
        )
    assert not Decision.objects.filter(task=task2).exists()


def readers_drew_apart():
    """Two readers each drew a different box: the case waits for a senior."""
    stage = review_stage(n_cases=1, readers_per_case=2)
    for offset in (0, 6):
        reader = UserFactory(roles=[MD])
        task = task_lease_next(stage=stage, reader=reader)
        pixels = np.zeros((48, 64), bool)
        pixels[5:25, 5 + offset : 30 + offset] = True
        decision_record_drawing(task=task, reader=reader, png=png_of(pixels), idempotency_key=key())
    senior = UserFactory(roles=[SENIOR_MD])
    return stage, task_lease_next(stage=stage, reader=senior, kind="adjudication"), senior


def test_a_senior_accepts_the_staple_consensus_of_the_readers_drawings():
    stage, task, senior = readers_drew_apart()
    masks = [d.mask for d, _count in adjudication_options(task=task)]
    consensus = staple([maskio.mask_from_png(blob_read(m.png.name)) for m in masks]).mask
    truth = adjudication_record_drawing(
        task=task, reader=senior, png=png_of(consensus), idempotency_key=key(), from_consensus=True
    ).truth
    assert (truth.source, truth.method, truth.mask.kind) == ("staple", "adjudication", "staple")
    assert truth.mask.details["of"] == "readers"
    assert truth.mask.details["sources"] == [m.pk for m in masks]
    # Accepted in the stage's outline style; the consensus as computed is its original.
    original = truth.mask.normalised_from
    assert np.array_equal(maskio.mask_from_png(blob_read(original.png.name)), consensus)


def test_a_changed_consensus_is_the_seniors_drawing_and_the_consensus_needs_an_adjudication():
    stage, task, senior = readers_drew_apart()
    masks = [d.mask for d, _count in adjudication_options(task=task)]
    changed = staple([maskio.mask_from_png(blob_read(m.png.name)) for m in masks]).mask.copy()
    changed[40:, 50:] = True
    with pytest.raises(ReviewError, match="start of its own"):
        adjudication_record_drawing(
            task=task,
            reader=senior,
            png=png_of(changed),
            idempotency_key=key(),
            from_consensus=True,
            base_position=1,
        )
    truth = adjudication_record_drawing(
        task=task, reader=senior, png=png_of(changed), idempotency_key=key(), from_consensus=True
    ).truth
    assert (truth.source, truth.mask.kind, truth.mask.author) == ("drawn", "drawn", senior)


def test_the_consensus_image_is_the_seniors_only(client):
    from django.urls import reverse
    from PIL import Image as PILImage

    from tests.factories import PASSWORD

    stage, task, senior = readers_drew_apart()
    url = reverse("review_consensus", args=[task.token])
    client.login(username=senior.username, password=PASSWORD)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    masks = [d.mask for d, _count in adjudication_options(task=task)]
    consensus = staple([maskio.mask_from_png(blob_read(m.png.name)) for m in masks]).mask
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(response.content))) != 0, consensus)
    drawing = client.get(reverse("review_draw", args=[task.token]) + "?from=consensus")
    html = drawing.content.decode()
    assert 'name="from_consensus" value="true"' in html and url in html
    other = UserFactory(roles=[SENIOR_MD])
    client.login(username=other.username, password=PASSWORD)
    assert client.get(url).status_code == 404
