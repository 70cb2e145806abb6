"""Click-to-refine end to end with a real Celery worker: the admin's training job on a stage's
accepted masks registers the dataset's current model, and a reader's clicks come back refined
through the `interactive` queue, quickly."""

from __future__ import annotations

import base64
import statistics
import time

import numpy as np
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from scipy import ndimage

from annotation.demo.review import review_demo_stage
from annotation.models import GroundTruth, Job, Mask, ModelVersion, Radiograph
from annotation.roles import ADMIN, MD
from cxrio.masks import mask_from_png
from tests.factories import UserFactory
from tests.support import wait_for_job

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.keras,
]

# Generous: a click through the worker takes tens of ms here; CI machines are slow and shared.
CLICK_P50_S = 1.5
CLICK_MAX_S = 5.0


def client_of(*roles: str) -> tuple[object, APIClient]:
    account = UserFactory(roles=list(roles))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=account).key}")
    return account, client


def test_a_trained_model_refines_clicks_through_the_interactive_worker(
    start_worker, phantom_dataset, settings
):
    settings.INTERACTIVE_TIMEOUT_S = 60.0  # the first click may wait for the model to load
    dataset, _folder = phantom_dataset(n_covid=14, n_control=0, size=64)
    cases = list(Radiograph.objects.filter(dataset=dataset).order_by("pk"))
    for radiograph in cases[:-1]:  # the accepted masks; the last case goes to review
        GroundTruth.objects.create(
            radiograph=radiograph,
            mask=radiograph.masks.get(kind=Mask.Kind.MANUAL, normalised_from__isnull=True),
            source="manual",
            method="imported",
        )
    stage = review_demo_stage(dataset=dataset, n_networks=2)
    worker = start_worker(queues="default,gpu,interactive")

    _admin, admin = client_of(ADMIN)
    launched = admin.post(
        f"/api/stages/{stage.pk}/interactive/",
        {"epochs": 20, "batch_size": 4, "lr": 3e-3, "image_size": 64, "widths": [8, 8, 8]},
        format="json",
    )
    assert launched.status_code == 201, launched.content
    job = wait_for_job(Job.objects.get(pk=launched.json()["id"]), worker=worker, timeout=600)
    assert job.state == Job.State.SUCCEEDED, job.error
    model = ModelVersion.objects.get(pk=job.result["model_version"])
    assert (model.purpose, model.deployed, model.stage) == ("interactive", True, stage)
    assert len(model.training_set) == len(cases) - 1
    assert job.progress_detail["epochs"] == 20

    md, client = client_of(MD)
    screen = client.post(f"/api/review/stages/{stage.pk}/next/", {}, format="json").json()
    truth = mask_from_png(
        cases[-1].masks.get(kind=Mask.Kind.MANUAL, normalised_from__isnull=True).png.read()
    )
    inside = ndimage.distance_transform_edt(truth)
    y, x = np.unravel_index(np.argmax(inside), truth.shape)
    clicks = [{"x": int(x), "y": int(y), "positive": True}]
    url = f"/api/review/tasks/{screen['task']}/refine/"

    first = client.post(url, {"mask": None, "clicks": clicks, "zones": []}, format="json")
    assert first.status_code == 200, first.content
    answer = first.json()
    assert answer["model_version"] == model.pk
    refined = mask_from_png(base64.b64decode(answer["mask"].split(",", 1)[1]))
    assert refined.shape == truth.shape
    assert refined[y, x], ("a positive click inside the infection marks it", job.result)

    took = []
    for i in range(6):
        started = time.perf_counter()
        again = client.post(
            url,
            {"mask": answer["mask"], "clicks": clicks, "zones": ["left_lower"][: i % 2]},
            format="json",
        )
        took.append(time.perf_counter() - started)
        assert again.status_code == 200, again.content
    assert statistics.median(took) < CLICK_P50_S, took
    assert max(took) < CLICK_MAX_S, took
