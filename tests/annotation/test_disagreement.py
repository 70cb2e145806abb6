"""Candidate disagreement per case: stored as the worker offers candidates, ordering the
queue, accepting agreeing cases without a reader (off by default, audited), and shown to
admins and researchers but to no reader."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import (
    AuditEvent,
    Candidate,
    CaseDisagreement,
    GroundTruth,
    Job,
    ReviewTask,
    Stage,
)
from annotation.presets import stage_config_validate
from annotation.roles import ADMIN, MD, RESEARCHER
from annotation.services.assignment import task_lease_next
from annotation.services.candidates import candidates_offer
from annotation.services.disagreement import case_disagreement_update
from annotation.services.model_versions import prediction_record
from annotation.services.review import decision_record
from annotation.services.stages import stage_advance, stage_create
from tests.factories import (
    DatasetFactory,
    ModelVersionFactory,
    RadiographFactory,
    UserFactory,
    mask_of,
    review_stage,
)

pytestmark = pytest.mark.django_db

W, H = 8, 8


def png8(prob: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.round(prob * 255).astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def block(x0: int, x1: int, y0: int = 0, y1: int = H) -> np.ndarray:
    pixels = np.zeros((H, W), dtype=bool)
    pixels[y0:y1, x0:x1] = True
    return pixels


# Three cases, three networks each:
#   "same":  one distinct candidate (all networks agree exactly)
#   "near":  32 px and 33 px: pairwise Dice 64/65 ≈ 0.985, ≥ 0.95
#   "split": left half, right half, left half: Dice 0, 1, 0 → mean 1/3
CASES = {
    "same": [block(0, 4), block(0, 4), block(0, 4)],
    "near": [block(0, 4), block(0, 4), block(0, 4) | block(4, 5, 0, 1)],
    "split": [block(0, 4), block(4, 8), block(0, 4)],
}


def predicted_stage(**config) -> tuple[Stage, dict[str, object]]:
    """A stage whose three networks have predicted every case, as the workers leave it."""
    dataset = DatasetFactory()
    radiographs = {name: RadiographFactory(dataset=dataset, width=W, height=H) for name in CASES}
    # Outlines as predicted (not normalised), so the hand-computed figures hold pixel for pixel.
    settings = stage_config_validate(
        {
            "mode": "nway",
            "folds": 1,
            "networks": [{"arch": "unet", "encoder": "tiny"}] * 3,
            "normalise_outlines": False,
        }
        | config
    )
    stage = Stage.objects.create(
        dataset=dataset,
        number=1,
        mode="nway",
        status=Stage.Status.PREDICTING,
        config={**settings, "targets": [r.pk for r in radiographs.values()]},
        queue_order=settings["queue_order"],
    )
    train = Job.objects.create(kind=Job.Kind.TRAIN, state=Job.State.SUCCEEDED, stage=stage)
    Job.objects.create(
        kind=Job.Kind.PREDICT,
        state=Job.State.SUCCEEDED,
        stage=stage,
        params={"train_job": train.pk},
    )
    versions = [ModelVersionFactory(dataset=dataset, stage=stage) for _ in range(3)]
    for name, masks in CASES.items():
        for version, pixels in zip(versions, masks, strict=True):
            prediction_record(
                stage=stage,
                radiograph=radiographs[name],
                model_version=version,
                pixels=pixels,
                probability_png=png8(pixels * 0.9 + 0.05),
            )
            # What the prediction worker does after offering each network's candidate.
            case_disagreement_update(stage=stage, radiograph=radiographs[name])
    return stage, radiographs


def advance(stage, capture) -> Stage:
    with capture(execute=True):
        stage_advance(stage=stage)
    stage.refresh_from_db()
    return stage


def test_figures_are_stored_per_case_as_candidates_are_offered():
    stage, cases = predicted_stage()
    split = CaseDisagreement.objects.get(stage=stage, radiograph=cases["split"])
    assert split.n_candidates == 2  # the third network's mask equals the first's
    # Two distinct candidates, disjoint halves: Dice 0; every pixel split.
    assert split.mean_pairwise_dice == pytest.approx(0.0)
    assert split.disagreement_area == pytest.approx(1.0)
    # Three networks' maps (.95/.05): each pixel averages 2·.95+.05 or .95+2·.05 over three.
    p = (2 * round(0.95 * 255) + round(0.05 * 255)) / 3 / 255
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    assert split.mean_entropy == pytest.approx(h, abs=1e-6)
    assert split.auto_candidate is None
    near = CaseDisagreement.objects.get(stage=stage, radiograph=cases["near"])
    assert near.n_candidates == 2
    assert near.mean_pairwise_dice == pytest.approx(64 / 65)
    assert near.disagreement_area == pytest.approx(1 / 64)
    same = CaseDisagreement.objects.get(stage=stage, radiograph=cases["same"])
    assert (same.n_candidates, same.mean_pairwise_dice, same.disagreement_area) == (1, 1.0, 0.0)


def test_masks_offered_after_the_networks_are_counted_before_review(
    django_capture_on_commit_callbacks,
):
    # As a Stage I offers the manual masks once every network has predicted.
    stage, cases = predicted_stage()
    before = CaseDisagreement.objects.get(radiograph=cases["split"]).mean_entropy
    candidates_offer(
        stage=stage,
        radiograph=cases["same"],
        masks=[mask_of(cases["same"], block(0, 8), kind="manual")],
    )
    # Same pixels as a network's candidate: no new candidate, but one more map to average.
    candidates_offer(
        stage=stage,
        radiograph=cases["split"],
        masks=[mask_of(cases["split"], block(4, 8), kind="manual")],
    )
    advance(stage, django_capture_on_commit_callbacks)
    same = CaseDisagreement.objects.get(radiograph=cases["same"])
    assert (same.n_candidates, same.n_masks) == (2, 4)
    assert same.mean_pairwise_dice == pytest.approx(2 * 32 / (32 + 64))
    split = CaseDisagreement.objects.get(radiograph=cases["split"])
    assert (split.n_candidates, split.n_masks) == (2, 4)
    assert split.mean_entropy != pytest.approx(before)


def test_auto_accept_is_off_by_default(django_capture_on_commit_callbacks):
    stage, cases = predicted_stage()
    assert stage.config["auto_accept"] is False
    assert advance(stage, django_capture_on_commit_callbacks).status == Stage.Status.REVIEWING
    assert not GroundTruth.objects.exists()
    assert not AuditEvent.objects.filter(action="case.auto_accept").exists()
    tasks = ReviewTask.objects.filter(stage=stage)
    assert set(tasks.values_list("radiograph_id", flat=True)) == {r.pk for r in cases.values()}


def test_agreeing_cases_are_accepted_without_a_reader_with_the_outcome_recorded(
    django_capture_on_commit_callbacks,
):
    stage, cases = predicted_stage(auto_accept=True, audit_share=0.0)
    advance(stage, django_capture_on_commit_callbacks)
    truths = {t.radiograph_id: t for t in GroundTruth.objects.all()}
    assert set(truths) == {cases["same"].pk, cases["near"].pk}
    for truth in truths.values():
        assert truth.method == GroundTruth.Method.AUTO_AGREEMENT
        assert truth.get_method_display() == "Auto-accepted by agreement"
        assert truth.source == GroundTruth.Source.NETWORK and truth.stage == stage
        assert not truth.readers.exists()
    # The rule's pick for "near": the candidate closest to the others (the 32-px block, twice).
    assert truths[cases["near"].pk].mask.area == 32
    events = AuditEvent.objects.filter(action="case.auto_accept")
    assert events.count() == 2
    assert all(e.reason == "auto-accepted by agreement" and e.actor is None for e in events)
    assert {e.new["radiograph"] for e in events} == set(truths)
    # Only the disagreeing case goes to readers.
    tasks = ReviewTask.objects.filter(stage=stage)
    assert list(tasks.values_list("radiograph_id", flat=True)) == [cases["split"].pk]
    assert stage.status == Stage.Status.REVIEWING


def test_a_stage_whose_cases_all_agree_closes_without_a_reader(django_capture_on_commit_callbacks):
    stage, cases = predicted_stage(auto_accept=True, audit_share=0.0, agreement_threshold=0.5)
    # With a threshold of 0.5 "split" (min Dice 0) still disagrees: accept it by hand first.
    CaseDisagreement.objects.filter(radiograph=cases["split"]).update(
        auto_candidate=Candidate.objects.filter(radiograph=cases["split"]).first()
    )
    assert advance(stage, django_capture_on_commit_callbacks).status == Stage.Status.CLOSED
    assert GroundTruth.objects.count() == 3
    assert not ReviewTask.objects.exists()


def test_audit_samples_go_to_readers_and_the_statistics_measure_the_rule(
    client, django_capture_on_commit_callbacks
):
    stage, cases = predicted_stage(auto_accept=True, audit_share=1.0)
    advance(stage, django_capture_on_commit_callbacks)
    assert not GroundTruth.objects.exists()
    audited = CaseDisagreement.objects.filter(stage=stage, audit_sample=True)
    assert set(audited.values_list("radiograph_id", flat=True)) == {
        cases["same"].pk,
        cases["near"].pk,
    }
    tasks = ReviewTask.objects.filter(stage=stage)
    assert tasks.count() == 3  # every case, the audit samples included, goes to readers

    # A reader decides every case: "near" against the rule (the 33-px candidate), "same"
    # necessarily with it.
    rule = audited.get(radiograph=cases["near"]).auto_candidate
    md = UserFactory(roles=[MD])
    stage.refresh_from_db()
    while (task := task_lease_next(stage=stage, reader=md)) is not None:
        order = task.candidate_order
        pick = (
            next(c for c in order if c != rule.pk)
            if task.radiograph_id == cases["near"].pk
            else order[0]
        )
        with django_capture_on_commit_callbacks(execute=True):
            decision_record(
                task=task,
                reader=md,
                position=order.index(pick) + 1,
                idempotency_key=uuid.uuid4().hex,
            )
    assert GroundTruth.objects.get(radiograph=cases["near"]).mask.area == 33
    assert GroundTruth.objects.get(radiograph=cases["near"]).method == GroundTruth.Method.SINGLE

    client.force_login(UserFactory(roles=[RESEARCHER]))
    page = client.get(reverse("stats_stage", args=[stage.pk])).content.decode()
    overruled = page.split('data-stats="audit-overruled">', 1)[1].split("</td>", 1)[0]
    assert overruled.startswith("1 of 2 (50%)")


def _three_case_stage(order: str, n_cases: int = 4) -> Stage:
    stage = review_stage(n_cases=n_cases)
    Stage.objects.filter(pk=stage.pk).update(queue_order=order)
    stage.refresh_from_db()
    return stage


def test_informative_first_serves_the_most_disagreeing_case_first():
    stage = _three_case_stage(Stage.QueueOrder.INFORMATIVE)
    # Make the last case the most disagreeing, the first the least.
    ids = list(CaseDisagreement.objects.filter(stage=stage).order_by("radiograph_id"))
    for value, record in zip((0.9, 0.5, 0.7, 0.1), ids, strict=True):
        record.mean_pairwise_dice = value
        record.save()
    expected = [r.radiograph_id for r in sorted(ids, key=lambda r: r.mean_pairwise_dice)]
    served = [
        task_lease_next(stage=stage, reader=UserFactory(roles=[MD])).radiograph_id for _ in range(4)
    ]
    assert served == expected


def test_dataset_order_serves_cases_in_their_order():
    stage = _three_case_stage(Stage.QueueOrder.DATASET)
    served = [
        task_lease_next(stage=stage, reader=UserFactory(roles=[MD])).radiograph_id for _ in range(4)
    ]
    assert served == sorted(served)


def test_no_reader_sees_the_disagreement_figures(client):
    stage = _three_case_stage(Stage.QueueOrder.INFORMATIVE, n_cases=1)
    CaseDisagreement.objects.filter(stage=stage).update(
        mean_pairwise_dice=0.123457, disagreement_area=0.654321, mean_entropy=0.777777
    )
    md = UserFactory(roles=[MD])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=md).key}")
    screen = api.post(f"/api/review/stages/{stage.pk}/next/", {}, format="json")
    bodies = [
        api.get("/api/review/stages/").content,
        screen.content,
        api.get(f"/api/review/tasks/{screen.json()['task']}/").content,
    ]
    client.force_login(md)
    bodies.append(client.get(reverse("review_queue")).content)
    response = client.get(reverse("review_next", kwargs={"stage_id": stage.pk}))
    bodies.append(client.get(response.url).content)
    for body in bodies:
        text = body.decode().lower()
        assert "disagree" not in text and "pairwise dice" not in text and "entropy" not in text
        assert not any(v in text for v in ("0.123", "0.654", "0.777", "0.12", "0.65", "0.78"))
    assert client.get(reverse("stats_stage", args=[stage.pk])).status_code == 403
    assert client.get(reverse("dashboard_stage", args=[stage.pk])).status_code == 403

    for role in (RESEARCHER, ADMIN):
        client.force_login(UserFactory(roles=[role]))
        page = client.get(reverse("stats_stage", args=[stage.pk])).content.decode()
        assert "Mean pairwise Dice" in page and "0.123" in page and "0.654" in page
    page = client.get(reverse("dashboard_stage", args=[stage.pk])).content.decode()
    assert "Informative first" in page and "0.123" in page


def test_admins_choose_the_queue_order_and_auto_accept_when_creating_a_stage(client):
    admin = UserFactory(roles=[ADMIN])
    dataset = DatasetFactory()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=admin).key}")
    bad = api.post(
        "/api/stages/",
        {"dataset": dataset.pk, "config": {"queue_order": "loudest"}},
        format="json",
    )
    assert bad.status_code == 400 and not Stage.objects.exists()
    made = api.post(
        "/api/stages/",
        {
            "dataset": dataset.pk,
            "preset": "fast-cpu-nway",
            "config": {"queue_order": "informative", "auto_accept": True, "audit_share": 0.1},
        },
        format="json",
    )
    assert made.status_code == 201, made.content
    assert made.json()["queue_order"] == "informative"
    stage = Stage.objects.get()
    assert stage.queue_order == Stage.QueueOrder.INFORMATIVE
    assert (stage.config["auto_accept"], stage.config["audit_share"]) == (True, 0.1)
    assert stage.config["agreement_threshold"] == 0.95
    stage.status = Stage.Status.CANCELLED
    stage.save()

    # The paper presets keep today's random queue and no auto-accept.
    paper = stage_create(dataset=dataset, preset="paper-stage-2")
    assert paper.queue_order == "random" and paper.config["auto_accept"] is False
    paper.status = Stage.Status.CANCELLED
    paper.save()

    client.force_login(admin)
    form = client.get(reverse("dashboard_stage_new", args=[dataset.pk])).content.decode()
    assert 'name="queue_order"' in form and 'name="auto_accept"' in form
    response = client.post(
        reverse("dashboard_stage_new", args=[dataset.pk]),
        {
            "preset": "fast-cpu", "mode": "nway", "networks": ["unet/tiny", "dla/tiny"],
            "epochs": 1, "batch_size": 2, "image_size": 64, "folds": 1, "readers_per_case": 1,
            "learning_rate": 0.001, "queue_order": "dataset", "auto_accept": "on",
            "agreement_threshold": 0.9,
        },
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    stage = Stage.objects.get(status=Stage.Status.DRAFT)
    assert stage.queue_order == "dataset"
    assert stage.config["auto_accept"] is True and stage.config["agreement_threshold"] == 0.9
    assert stage.config["audit_share"] == 0.05
