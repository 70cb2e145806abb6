"""Outline normalisation of candidates: what readers see, what is accepted, what is exported,
the stage setting that turns it off, and the identification AUC on the statistics page."""

from __future__ import annotations

import io
import json
import re
import uuid

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import GroundTruth, Mask, ModelVersion, Stage
from annotation.roles import ADMIN, MD
from annotation.selectors.statistics import IDENTIFICATION_MIN_MASKS, stage_identification
from annotation.services.assignment import task_lease_next
from annotation.services.candidates import candidates_offer, mask_create
from annotation.services.exports import ORIGINALS_DIR, export_build, export_request
from annotation.services.review import decision_record, decision_record_drawing
from annotation.storage import blob_read
from cxrio import masks as maskio
from cxrio.outline import OUTLINE_VERSION, dice, normalise_outline
from tests.annotation.exporting import read_zip
from tests.factories import PASSWORD, DatasetFactory, RadiographFactory, UserFactory, review_stage

pytestmark = pytest.mark.django_db


def key() -> str:
    return str(uuid.uuid4())


def pixels_of(mask: Mask) -> np.ndarray:
    return maskio.mask_from_png(blob_read(mask.png.name))


def polygon(width: int = 64, height: int = 48) -> np.ndarray:
    """A polygon-tool mask: a quadrilateral with sharp corners."""
    from mlworker.phantoms._raster import fill_polygon

    square = fill_polygon(
        np.array([18.0, 44.0, 40.0, 14.0]), np.array([10.0, 14.0, 36.0, 32.0]), max(width, height)
    )
    return square[:height, :width]


def blank_stage(dataset, **config) -> Stage:
    return Stage.objects.create(
        dataset=dataset, number=1, mode=Stage.Mode.NWAY, status=Stage.Status.REVIEWING,
        config=config,
    )  # fmt: skip


def test_an_offered_candidate_shows_the_normalised_mask_and_keeps_the_original_as_source():
    dataset = DatasetFactory()
    radiograph = RadiographFactory(dataset=dataset)
    stage = blank_stage(dataset)
    manual = mask_create(radiograph=radiograph, pixels=polygon(), kind=Mask.Kind.MANUAL)
    version = ModelVersion.objects.create(
        dataset=dataset, stage=stage, purpose="candidate", arch="unet", encoder="tiny"
    )
    network = mask_create(
        radiograph=radiograph, pixels=polygon(), kind=Mask.Kind.NETWORK, model_version=version
    )
    candidates = candidates_offer(stage=stage, radiograph=radiograph, masks=[manual, network])
    # The same pixels give one candidate, whichever the source; it shows the normalised form.
    assert len(candidates) == 1
    candidate = candidates[0]
    shown = candidate.mask
    assert shown.normalised_from_id in (manual.pk, network.pk)
    assert shown.kind == shown.normalised_from.kind
    assert shown.details["outline_version"] == OUTLINE_VERSION
    assert set(candidate.sources.all()) == {manual, network}
    assert np.array_equal(pixels_of(shown), normalise_outline(polygon()))
    assert dice(pixels_of(shown), polygon()) >= 0.9
    assert not np.array_equal(pixels_of(shown), polygon())  # corners rounded
    # Offering again finds the same normalised mask and candidate.
    again = candidates_offer(stage=stage, radiograph=radiograph, masks=[manual])
    assert [c.pk for c in again] == [candidate.pk]
    assert Mask.objects.filter(normalised_from=manual).count() <= 1


def test_a_stage_with_normalisation_off_shows_the_masks_as_they_are():
    dataset = DatasetFactory()
    radiograph = RadiographFactory(dataset=dataset)
    stage = blank_stage(dataset, normalise_outlines=False)
    manual = mask_create(radiograph=radiograph, pixels=polygon(), kind=Mask.Kind.MANUAL)
    (candidate,) = candidates_offer(stage=stage, radiograph=radiograph, masks=[manual])
    assert candidate.mask == manual and list(candidate.sources.all()) == [manual]
    assert not Mask.objects.filter(normalised_from__isnull=False).exists()


def square_png(task, size=10) -> tuple[np.ndarray, bytes]:
    pixels = np.zeros((task.radiograph.work_height, task.radiograph.work_width), dtype=bool)
    pixels[5 : 5 + size, 5 : 5 + size] = True
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return pixels, buffer.getvalue()


def test_a_drawn_mask_is_accepted_and_exported_in_its_normalised_form_with_the_original_kept():
    stage = review_stage(n_cases=2, n_networks=2)
    md = UserFactory(roles=[MD])
    task = task_lease_next(stage=stage, reader=md)
    drawn, png = square_png(task)
    decision = decision_record_drawing(
        task=task, reader=md, png=png, idempotency_key=key()
    ).decision
    assert decision.mask.normalised_from.kind == Mask.Kind.DRAWN
    assert np.array_equal(pixels_of(decision.mask.normalised_from), drawn)
    while (task := task_lease_next(stage=stage, reader=md)) is not None:
        decision_record(task=task, reader=md, position=1, idempotency_key=key())
    truths = GroundTruth.objects.filter(stage=stage).select_related("mask")
    assert truths.count() == 2 and all(t.mask.normalised_from_id for t in truths)

    export = export_request(
        dataset=stage.dataset, created_by=None, formats=["qata", "coco", "manifest"],
        enqueue=False,
    )  # fmt: skip
    export_build(export=export)
    archive = read_zip(blob_read(export.file.name))
    records = json.loads(archive.read("manifest.json"))
    assert len(records) == 2 and all(r["mask_normalised"] for r in records)
    changed = 0
    for record in records:
        original = archive.read(record["original_mask"])
        assert record["original_mask"].startswith(ORIGINALS_DIR + "/")
        assert record["decisions"][0]["chosen_mask"]["normalised"] is True
        accepted = np.asarray(Image.open(io.BytesIO(archive.read(record["mask"])))) > 0
        kept = np.asarray(Image.open(io.BytesIO(original))) > 0
        assert dice(accepted, kept) >= 0.9
        changed += not np.array_equal(accepted, kept)
    assert changed  # the drawn square's corners at least were rounded
    coco = json.loads(archive.read("annotations/instances.json"))
    assert all(image["mask_normalised"] for image in coco["images"])
    card = archive.read("README.md").decode()
    assert "2 accepted mask(s) are outline-normalised" in card
    assert "mask_normalised" in archive.read("manifest.csv").decode().splitlines()[0]


def test_the_api_and_the_new_stage_form_set_the_normalisation(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=4, n_control=1, size=64)
    client = APIClient()
    token = Token.objects.create(user=UserFactory(roles=[ADMIN]))
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    body = {"dataset": dataset.pk, "config": {"normalise_outlines": False}}
    answer = client.post("/api/stages/", body, format="json")
    assert answer.status_code == 201, answer.content
    assert answer.json()["config"]["normalise_outlines"] is False
    refused = client.post(
        "/api/stages/", {"dataset": dataset.pk, "config": {"normalise_outlines": "no"}},
        format="json",
    )  # fmt: skip
    assert refused.status_code == 400
    Stage.objects.filter(pk=answer.json()["id"]).update(status=Stage.Status.CANCELLED)
    admin = UserFactory(roles=[ADMIN])
    web = APIClient()
    web.login(username=admin.username, password=PASSWORD)
    page = web.get(reverse("dashboard_stage_new", args=[dataset.pk])).content.decode()
    tag = re.search(r"<input[^>]*name=\"normalise_outlines\"[^>]*>", page)
    assert tag is not None and "checked" in tag.group(0)  # on unless turned off
    default = client.post("/api/stages/", {"dataset": dataset.pk}, format="json")
    assert default.json()["config"]["normalise_outlines"] is True


def test_the_statistics_page_shows_the_identification_auc(client):
    few = review_stage(n_cases=2, n_networks=1)
    admin = UserFactory(roles=[ADMIN])
    client.login(username=admin.username, password=PASSWORD)
    html = client.get(reverse("stats_stage", kwargs={"stage_id": few.pk})).content.decode()
    assert 'data-stats="identification"' in html and "not enough masks" in html

    stage = review_stage(n_cases=IDENTIFICATION_MIN_MASKS, n_networks=1)
    found = stage_identification(stage=stage)
    assert (found.manual, found.network) == (IDENTIFICATION_MIN_MASKS, IDENTIFICATION_MIN_MASKS)
    assert found.enough and 0.0 <= found.auc_shown <= 1.0 and 0.0 <= found.auc_original <= 1.0
    html = client.get(reverse("stats_stage", kwargs={"stage_id": stage.pk})).content.decode()
    cell = html.split('data-stats="identification-auc">', 1)[1].split("<", 1)[0]
    assert cell == f"{found.auc_shown:.2f}"
    assert "not enough masks" not in html
