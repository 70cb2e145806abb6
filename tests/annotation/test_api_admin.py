"""Admins' write actions over the API: create, launch and cancel stages; cancel and retry jobs."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Job, Stage
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def api(role: str) -> APIClient:
    client = APIClient()
    token = Token.objects.create(user=UserFactory(roles=[role]))
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def dataset(phantom_dataset):
    # Four COVID-19 cases with manual masks: enough for a 2-fold Stage I.
    dataset, _ = phantom_dataset(n_covid=4, n_control=1, size=64)
    return dataset


def create(client, dataset, /, **body):
    return client.post("/api/stages/", {"dataset": dataset.pk} | body, format="json")


def test_an_admin_creates_launches_and_cancels_a_stage(
    dataset, broker, django_capture_on_commit_callbacks
):
    admin = api("admin")
    config = {"epochs": 1, "networks": [{"arch": "unet", "encoder": "tiny"}]}
    answer = create(admin, dataset, preset="fast-cpu", config=config, name="Stage I")
    assert answer.status_code == 201, answer.content
    created = answer.json()
    assert (created["number"], created["status"], created["name"]) == (1, "draft", "Stage I")
    assert created["config"]["epochs"] == 1 and created["config"]["folds"] == 2
    assert created["n_ground_truths"] == 0
    busy = create(admin, dataset)
    assert busy.status_code == 409 and "Stage 1 is still draft" in busy.json()["detail"]

    url = f"/api/stages/{created['id']}/"
    with django_capture_on_commit_callbacks(execute=True):
        launched = admin.post(url + "launch/")
    assert launched.status_code == 200 and launched.json()["status"] == "training"
    jobs = Job.objects.filter(stage_id=created["id"], kind="train")
    assert jobs.count() == 2 and sorted(broker.job_ids) == sorted(
        j.pk for j in jobs
    )  # one per fold
    again = admin.post(url + "launch/")
    assert again.status_code == 409 and "not a draft" in again.json()["detail"]

    cancelled = admin.post(url + "cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert set(jobs.values_list("state", flat=True)) == {"cancelled"}
    assert admin.post(url + "cancel/").status_code == 409


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"config": {"epochs": 0}}, 400, "greater than or equal to 1"),
        ({"preset": "huge"}, 400, "is not a valid choice"),
        ({"config": {"networks": [{"arch": "unet", "encoder": "vgg"}]}}, 400, "valid choice"),
        ({"config": {"mode": "nway", "folds": 1, "networks": [{"arch": "unet", "encoder": "tiny"}]}},
         409, "needs 2 to 6 networks"),
        ({"config": {"image_size": 100}}, 409, "multiple of 32"),
        ({"dataset": 999999}, 404, "dataset 999999 does not exist"),
    ],
)  # fmt: skip
def test_a_bad_stage_is_refused_with_the_reason(dataset, body, status, message):
    answer = create(api("admin"), dataset, **body)
    assert answer.status_code == status and message in str(answer.json())
    assert not Stage.objects.exists()


def test_an_admin_cancels_and_retries_a_job(dataset, broker, django_capture_on_commit_callbacks):
    admin = api("admin")
    job = Job.objects.create(kind="train", dataset=dataset)
    url = f"/api/jobs/{job.pk}/"
    cancelled = admin.post(url + "cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = admin.post(url + "cancel/")
    assert (
        again.status_code == 409 and again.json()["detail"] == f"job #{job.pk} is already cancelled"
    )
    with django_capture_on_commit_callbacks(execute=True):
        retried = admin.post(url + "retry/")
    assert retried.status_code == 200 and retried.json()["state"] == "queued"
    assert broker.job_ids == [job.pk]
    refused = admin.post(url + "retry/")
    assert refused.status_code == 409 and "only failed or cancelled" in refused.json()["detail"]


@pytest.mark.parametrize("role", ["researcher", "md", "senior_md"])
def test_only_admins_write(dataset, role, broker):
    client = api(role)
    stage = Stage.objects.create(dataset=dataset, number=1, config={})
    job = Job.objects.create(kind="train", dataset=dataset)
    answers = [
        create(client, dataset).status_code,
        client.post(f"/api/stages/{stage.pk}/launch/").status_code,
        client.post(f"/api/stages/{stage.pk}/cancel/").status_code,
        client.post(f"/api/jobs/{job.pk}/cancel/").status_code,
        client.post(f"/api/jobs/{job.pk}/retry/").status_code,
    ]
    assert answers == [403] * 5
    stage.refresh_from_db()
    job.refresh_from_db()
    assert (stage.status, job.state, broker.messages) == ("draft", "queued", [])
    assert APIClient().post(f"/api/jobs/{job.pk}/cancel/").status_code == 401
