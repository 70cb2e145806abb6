"""Click-to-refine over the review API without a worker: who may ask, what is refused and
why, what a decision keeps of the clicks; and the admin's training launch."""

from __future__ import annotations

import base64
import io
import json
import uuid

import numpy as np
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Decision, GroundTruth, Job, ModelVersion, ReviewTask
from annotation.roles import ADMIN, MD, SENIOR_MD
from annotation.services.interactive import REFINE_TASK
from cxrio.masks import mask_to_png
from tests.factories import ModelVersionFactory, UserFactory, review_stage

pytestmark = pytest.mark.django_db


def client_of(*roles: str) -> tuple[object, APIClient]:
    account = UserFactory(roles=list(roles))
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=account)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return account, client


def lease(client, stage) -> dict:
    answer = client.post(f"/api/review/stages/{stage.pk}/next/", {}, format="json")
    assert answer.status_code == 200, answer.content
    return answer.json()


def data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(mask_to_png(pixels)).decode()


def refine(client, screen, **body):
    body = {"mask": None, "clicks": [{"x": 10, "y": 12, "positive": True}], "zones": [], **body}
    return client.post(f"/api/review/tasks/{screen['task']}/refine/", body, format="json")


def interactive_model(stage) -> ModelVersion:
    return ModelVersionFactory(
        dataset=stage.dataset, purpose="interactive", arch="interactive", deployed=True
    )


def test_without_a_model_refine_answers_503_in_words():
    stage = review_stage(n_cases=1)
    _md, client = client_of(MD)
    answer = refine(client, lease(client, stage))
    assert answer.status_code == 503
    assert "no click-to-refine model" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"clicks": []}, "at least one click"),
        ({"clicks": [{"x": 64, "y": 0, "positive": True}]}, "outside the 64×48"),
        ({"clicks": [{"x": -1, "y": 0, "positive": True}]}, "greater than or equal to 0"),
        ({"clicks": [{"x": 1.5, "y": 0, "positive": True}]}, "integer"),
        ({"clicks": [{"x": 1, "y": 0}]}, "required"),
        ({"zones": ["left_top"]}, "unknown lung zones left_top"),
        ({"mask": "not a data url"}, "PNG data URL"),
        ({"mask": data_url(np.ones((10, 10), bool))}, "cannot be used"),
    ],
)
def test_bad_input_is_refused_with_400_and_no_message_is_sent(body, words, broker):
    stage = review_stage(n_cases=1)
    interactive_model(stage)
    _md, client = client_of(MD)
    answer = refine(client, lease(client, stage), **body)
    assert answer.status_code == 400, answer.content
    assert words in str(answer.json())
    assert not [m for m in broker.messages if m.task == REFINE_TASK]


def test_a_case_not_yours_answers_404_and_staff_are_refused():
    stage = review_stage(n_cases=2)
    interactive_model(stage)
    _md, client = client_of(MD)
    screen = lease(client, stage)
    _other, other = client_of(MD)
    assert refine(other, screen).status_code == 404
    _admin, admin = client_of(ADMIN)
    assert refine(admin, screen).status_code == 403


def test_no_worker_answering_in_time_is_a_503_that_says_so(celery_broker, settings):
    settings.INTERACTIVE_TIMEOUT_S = 0.3
    stage = review_stage(n_cases=1)
    interactive_model(stage)
    _md, client = client_of(MD)
    answer = refine(client, lease(client, stage))
    assert answer.status_code == 503
    assert "No click-to-refine worker answered within 0.3 s" in answer.json()["detail"]


def drawing(client, screen, pixels, **fields):
    data = {"mask": io.BytesIO(mask_to_png(pixels)), "idempotency_key": uuid.uuid4().hex, **fields}
    return client.post(f"/api/review/tasks/{screen['task']}/drawing/", data, format="multipart")


def test_a_drawing_keeps_its_clicks_zones_and_model_and_reads_refined_with_n_clicks():
    stage = review_stage(n_cases=1)
    model = interactive_model(stage)
    md, client = client_of(MD)
    screen = lease(client, stage)
    pixels = np.zeros((48, 64), bool)
    pixels[10:30, 10:30] = True
    clicks = [{"x": 12, "y": 14, "positive": True}, {"x": 40, "y": 5, "positive": False}]
    answer = drawing(
        client,
        screen,
        pixels,
        clicks=json.dumps(clicks),
        zones='["left_lower", "right_upper"]',
        interactive_model=model.pk,
    )
    assert answer.status_code in (200, 201), answer.content
    decision = Decision.objects.get(reader=md)
    assert decision.clicks == clicks
    assert decision.zones == ["right_upper", "left_lower"]
    assert decision.interactive_model == model
    # The accepted mask's provenance names the click-to-refine model.
    assert list(GroundTruth.objects.get().model_versions.all()) == [model]
    client.force_login(md)
    page = client.get(f"/review/s/{stage.pk}/cases")
    assert "Refined with 2 clicks" in page.content.decode()
    staff = UserFactory(roles=[ADMIN])
    client.force_login(staff)
    stats = client.get(f"/stats/s/{stage.pk}/").content.decode()
    assert "Refined with clicks</th><td>1 decision, 2 clicks" in stats


def test_clicks_without_the_model_that_refined_them_are_refused():
    stage = review_stage(n_cases=1)
    md, client = client_of(MD)
    screen = lease(client, stage)
    pixels = np.zeros((48, 64), bool)
    pixels[10:30, 10:30] = True
    answer = drawing(client, screen, pixels, clicks='[{"x": 1, "y": 1, "positive": true}]')
    assert answer.status_code == 400
    assert "interactive model version" in str(answer.json())
    assert not Decision.objects.filter(reader=md).exists()


def test_an_admin_launches_training_on_the_accepted_masks(broker):
    stage = review_stage(n_cases=3)
    _admin, admin = client_of(ADMIN)
    refused = admin.post(f"/api/stages/{stage.pk}/interactive/", {}, format="json")
    assert refused.status_code == 409
    assert "needs at least 2" in refused.json()["detail"]
    for radiograph in stage.dataset.radiographs.all():
        GroundTruth.objects.create(
            radiograph=radiograph,
            mask=radiograph.masks.first(),
            stage=stage,
            source="manual",
            method="single",
        )
    answer = admin.post(
        f"/api/stages/{stage.pk}/interactive/", {"epochs": 2, "image_size": 64}, format="json"
    )
    assert answer.status_code == 201, answer.content
    job = Job.objects.get(pk=answer.json()["id"])
    assert job.kind == "interactive"
    assert len(job.params["training"]) == 3
    assert (job.params["epochs"], job.params["image_size"]) == (2, 64)
    again = admin.post(f"/api/stages/{stage.pk}/interactive/", {}, format="json")
    assert again.status_code == 409
    assert "already queued" in again.json()["detail"]
    bad = admin.post(
        f"/api/stages/{stage.pk}/interactive/",
        {"image_size": 100, "widths": [8, 16, 32]},
        format="json",
    )
    assert bad.status_code in (400, 409)


def test_the_draw_screen_offers_clicks_only_with_a_model(client):
    stage = review_stage(n_cases=1)
    md, api = client_of(MD)
    screen = lease(api, stage)
    client.force_login(md)
    page = client.get(f"/review/t/{screen['task']}/draw").content.decode()
    assert "Click-to-refine is off" in page and "data-refine-url" not in page
    interactive_model(stage)
    page = client.get(f"/review/t/{screen['task']}/draw").content.decode()
    assert "Click-to-refine is off" not in page
    token = screen["task"]
    assert f'data-refine-url="/api/review/tasks/{token}/refine/"' in page


def test_a_senior_md_refines_in_adjudication_and_the_clicks_are_kept(celery_broker, settings):
    settings.INTERACTIVE_TIMEOUT_S = 0.3
    stage = review_stage(n_cases=1, readers_per_case=2)
    model = interactive_model(stage)
    for position in (1, 2):
        _md, client = client_of(MD)
        screen = lease(client, stage)
        task = ReviewTask.objects.get(token=screen["task"])
        choose = task.candidate_order.index(sorted(task.candidate_order)[position - 1]) + 1
        body = {"position": choose, "idempotency_key": uuid.uuid4().hex}
        client.post(f"/api/review/tasks/{screen['task']}/pick/", body, format="json")
    senior, client = client_of(SENIOR_MD)
    screen = lease(client, stage)
    assert screen["kind"] == "adjudication"
    # Let in (the worker is what is missing here), not refused as another reader's case.
    answer = refine(client, screen)
    assert answer.status_code == 503 and "No click-to-refine worker" in answer.json()["detail"]
    pixels = np.zeros((48, 64), bool)
    pixels[4:12, 6:20] = True
    clicks = [{"x": 8, "y": 6, "positive": True}]
    drawn = drawing(client, screen, pixels, clicks=json.dumps(clicks), interactive_model=model.pk)
    assert drawn.status_code == 201, drawn.content
    decision = Decision.objects.get(reader=senior)
    assert (decision.clicks, decision.interactive_model) == (clicks, model)


def test_the_stage_page_launches_training_and_names_the_current_model(
    client, broker, django_capture_on_commit_callbacks
):
    stage = review_stage(n_cases=2)
    for radiograph in stage.dataset.radiographs.all():
        GroundTruth.objects.create(
            radiograph=radiograph, mask=radiograph.masks.first(), source="manual", method="single"
        )
    admin = UserFactory(roles=[ADMIN])
    client.force_login(admin)
    page = client.get(f"/dashboard/stages/{stage.pk}/").content.decode()
    assert "No click-to-refine model yet" in page
    assert "Train click-to-refine on 2 accepted masks" in page
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(f"/dashboard/stages/{stage.pk}/interactive", follow=True)
    job = Job.objects.get(kind="interactive")
    assert f"Click-to-refine training queued (job #{job.pk})" in answer.content.decode()
    assert [m.task for m in broker.messages] == ["annotation.worker.interactive_job"]
    assert "Train click-to-refine on 2 accepted masks" in client.get("/dashboard/").content.decode()
    model = interactive_model(stage)
    page = client.get(f"/dashboard/stages/{stage.pk}/").content.decode()
    assert f"Current model: <strong>#{model.pk}</strong>" in page


def test_an_unreachable_broker_is_a_503_in_words_and_its_cause_is_logged(monkeypatch, caplog):
    from celery import current_app
    from kombu.exceptions import OperationalError

    sent = []

    def down(*args, **kwargs):
        sent.append(kwargs)
        raise OperationalError("Error 111 connecting: Connection refused")

    monkeypatch.setattr(current_app._get_current_object(), "send_task", down)
    stage = review_stage(n_cases=1)
    interactive_model(stage)
    _md, client = client_of(MD)
    answer = refine(client, lease(client, stage))
    assert answer.status_code == 503
    assert "cannot reach its worker" in answer.json()["detail"]
    assert len(sent) == 2, "one more try, then the reader is told"
    causes = [r.getMessage() for r in caplog.records if "click-to-refine" in r.getMessage()]
    assert len(causes) == 2 and all("Connection refused" in c for c in causes)


def test_a_broker_blip_is_tried_again_and_the_reader_gets_the_mask(monkeypatch, celery_broker):
    """The first send fails on a dropped connection; the second reaches a worker, whose answer
    (written here on the reply list, as the worker does) comes back to the reader."""
    from celery import current_app
    from kombu.exceptions import OperationalError

    from annotation.services.interactive import redis_client

    refined = mask_to_png(np.eye(48, 64, dtype=bool))
    sends = []

    def flaky(name, kwargs, **options):
        sends.append(kwargs["reply"])
        if len(sends) == 1:
            raise OperationalError("Connection closed by server.")
        answer = {
            "ok": True,
            "png": base64.b64encode(refined).decode(),
            "model_version": kwargs["model_version"],
        }
        redis_client().rpush(kwargs["reply"], json.dumps(answer))

    monkeypatch.setattr(current_app._get_current_object(), "send_task", flaky)
    stage = review_stage(n_cases=1)
    model = interactive_model(stage)
    _md, client = client_of(MD)
    answer = refine(client, lease(client, stage))
    assert answer.status_code == 200, answer.content
    assert answer.json()["model_version"] == model.pk
    png = base64.b64decode(answer.json()["mask"].split(",", 1)[1])
    assert png == refined
    assert len(sends) == 2 and sends[0] != sends[1], "each try has its own reply list"
    assert not redis_client().exists(*sends), "no reply list is left behind"
