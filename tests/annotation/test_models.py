"""Invariants the database itself enforces, whatever code path writes the rows."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction

from annotation import models
from tests.factories import DatasetFactory, UserFactory

pytestmark = pytest.mark.django_db


def _radiograph(dataset, sha="a" * 64, name="case.png"):
    return models.Radiograph.objects.create(
        dataset=dataset, name=name, sha256=sha, original=f"originals/{sha}.png", source_format="png",
        display=f"display/{sha}.png", width=8, height=8, bit_depth=8, work_width=8, work_height=8,
    )  # fmt: skip


def _mask(radiograph, kind="manual", sha="m" * 64, **extra):
    return models.Mask.objects.create(
        radiograph=radiograph, kind=kind, png=f"masks/{sha}.png", pixel_sha256=sha, width=8, height=8,
        area=3, **extra,
    )  # fmt: skip


def test_the_four_roles_exist_as_groups():
    assert set(Group.objects.values_list("name", flat=True)) >= {
        "md",
        "senior_md",
        "admin",
        "researcher",
    }


def test_every_model_is_in_the_django_admin():
    for model in apps.get_app_config("annotation").get_models():
        assert admin.site.is_registered(model), model.__name__


def test_every_admin_list_page_opens_for_an_admin(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    for model in apps.get_app_config("annotation").get_models():
        url = f"/admin/annotation/{model._meta.model_name}/"
        assert client.get(url).status_code == 200, url


def test_the_same_content_is_stored_once_per_dataset():
    dataset = DatasetFactory()
    _radiograph(dataset)
    with pytest.raises(IntegrityError), transaction.atomic():
        _radiograph(dataset, name="renamed-copy.png")
    # Another dataset may hold the same file.
    _radiograph(DatasetFactory())


def test_a_radiograph_has_at_most_one_ground_truth():
    radiograph = _radiograph(DatasetFactory())
    mask = _mask(radiograph)
    models.GroundTruth.objects.create(
        radiograph=radiograph, mask=mask, source="manual", method="imported"
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        models.GroundTruth.objects.create(
            radiograph=radiograph, mask=mask, source="manual", method="imported"
        )


def _task(radiograph, stage, **extra):
    return models.ReviewTask.objects.create(stage=stage, radiograph=radiograph, **extra)


def test_one_active_decision_per_task_and_reader():
    dataset = DatasetFactory()
    radiograph = _radiograph(dataset)
    stage = models.Stage.objects.create(dataset=dataset, number=1, mode="pairwise")
    reader = UserFactory(roles=["md"])
    task = _task(radiograph, stage, reader=reader)
    mask = _mask(radiograph)
    candidate = models.Candidate.objects.create(
        stage=stage, radiograph=radiograph, mask=mask, pixel_sha256="m" * 64
    )
    first = models.Decision.objects.create(
        task=task,
        reader=reader,
        outcome="chose",
        candidate=candidate,
        mask=mask,
        idempotency_key="k1",
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        models.Decision.objects.create(
            task=task,
            reader=reader,
            outcome="chose",
            candidate=candidate,
            mask=mask,
            idempotency_key="k2",
        )
    # After "undo" the reader may decide again.
    first.revoked_at = first.created_at
    first.save()
    models.Decision.objects.create(
        task=task,
        reader=reader,
        outcome="chose",
        candidate=candidate,
        mask=mask,
        idempotency_key="k3",
    )


def test_an_idempotency_key_is_used_once():
    dataset = DatasetFactory()
    radiograph = _radiograph(dataset)
    stage = models.Stage.objects.create(dataset=dataset, number=1, mode="nway")
    reader, other = UserFactory(roles=["md"]), UserFactory(roles=["md"])
    mask = _mask(radiograph)
    candidate = models.Candidate.objects.create(
        stage=stage, radiograph=radiograph, mask=mask, pixel_sha256="m" * 64
    )
    models.Decision.objects.create(
        task=_task(radiograph, stage, reader=reader), reader=reader, outcome="chose", candidate=candidate,
        mask=mask, idempotency_key="same",
    )  # fmt: skip
    with pytest.raises(IntegrityError), transaction.atomic():
        models.Decision.objects.create(
            task=_task(radiograph, stage, reader=other, slot=1), reader=other, outcome="chose",
            candidate=candidate, mask=mask, idempotency_key="same",
        )  # fmt: skip


def test_an_md_never_reads_the_same_case_twice_in_a_stage():
    dataset = DatasetFactory()
    radiograph = _radiograph(dataset)
    stage = models.Stage.objects.create(dataset=dataset, number=1, mode="nway", readers_per_case=2)
    reader = UserFactory(roles=["md"])
    _task(radiograph, stage, reader=reader, slot=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        _task(radiograph, stage, reader=reader, slot=1)


def test_a_network_mask_names_its_model():
    radiograph = _radiograph(DatasetFactory())
    with pytest.raises(IntegrityError), transaction.atomic():
        _mask(radiograph, kind="network")


def test_identical_candidates_are_offered_once_per_case_and_stage():
    dataset = DatasetFactory()
    radiograph = _radiograph(dataset)
    stage = models.Stage.objects.create(dataset=dataset, number=1, mode="nway")
    mask = _mask(radiograph)
    models.Candidate.objects.create(
        stage=stage, radiograph=radiograph, mask=mask, pixel_sha256="m" * 64
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        models.Candidate.objects.create(
            stage=stage, radiograph=radiograph, mask=mask, pixel_sha256="m" * 64
        )


def test_one_deployed_detector_per_dataset():
    dataset = DatasetFactory()
    common = {"dataset": dataset, "purpose": "detector", "arch": "unet", "encoder": "densenet121"}
    models.ModelVersion.objects.create(deployed=True, **common)
    models.ModelVersion.objects.create(deployed=False, **common)
    with pytest.raises(IntegrityError), transaction.atomic():
        models.ModelVersion.objects.create(deployed=True, **common)
