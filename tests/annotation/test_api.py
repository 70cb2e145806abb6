"""The REST API: token and session auth, data with filters and pagination, masks, exports."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Export, Job
from annotation.storage import blob_read
from annotation.worker.tasks.data import export_build_task
from cxrio.masks import mask_from_png
from tests.annotation.exporting import full_size, provenance_scenario, user
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def scenario(tmp_path):
    s = provenance_scenario(tmp_path)
    s.users["researcher"] = user("researcher", "researcher")
    s.users["admin"] = user("admin", "admin")
    return s


def client_for(account) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=account)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def png(response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body(response))))


def test_a_token_from_the_token_endpoint_opens_the_api(scenario):
    client = APIClient()
    answer = client.post(
        "/api/auth/token/", {"username": "researcher", "password": PASSWORD}, format="json"
    )
    assert answer.status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {answer.json()['token']}")
    assert client.get("/api/datasets/").status_code == 200
    wrong = APIClient().post(
        "/api/auth/token/", {"username": "researcher", "password": "x"}, format="json"
    )
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"] == "Token"
    form = APIClient().post("/api/auth/token/", "username=researcher&password=",
                            content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert form.status_code == 400 and "password" in form.json()


def test_a_browser_session_opens_the_api_too(scenario):
    client = APIClient()
    client.force_login(scenario.users["researcher"])
    assert client.get("/api/datasets/").json()["results"][0]["name"] == "qata-small"


def test_anonymous_calls_are_asked_to_authenticate(scenario):
    answer = APIClient().get("/api/radiographs/")
    assert answer.status_code == 401 and answer["WWW-Authenticate"] == "Token"


def test_datasets_carry_their_counts(scenario):
    [row] = client_for(scenario.users["researcher"]).get("/api/datasets/").json()["results"]
    assert (row["n_cases"], row["n_covid"], row["n_manual"], row["n_accepted"]) == (6, 5, 5, 4)


def test_radiographs_are_paginated_and_filtered(scenario):
    client = client_for(scenario.users["researcher"])
    page = client.get("/api/radiographs/", {"page_size": 4}).json()
    assert page["count"] == 6 and len(page["results"]) == 4 and page["next"]
    second = client.get(page["next"]).json()
    assert len(second["results"]) == 2

    def names(**query):
        rows = client.get("/api/radiographs/", query).json()["results"]
        return sorted(r["name"] for r in rows)

    assert names(label="normal") == ["e.png"]
    assert names(has_ground_truth="true") == ["a.png", "b.png", "c.png", "d.png"]
    assert names(has_ground_truth="false") == ["e.png", "f.png"]
    assert names(stage=scenario.stages[2].pk) == ["b.png", "c.png"]
    assert names(dataset=scenario.dataset.pk + 1) == []
    bad = client.get("/api/radiographs/", {"label": "flu"})
    assert bad.status_code == 400 and "label" in bad.json()


def test_the_image_download_is_the_display_png(scenario):
    client = client_for(scenario.users["researcher"])
    a = scenario.cases["a.png"]
    answer = client.get(f"/api/radiographs/{a.pk}/image/")
    assert answer.status_code == 200 and answer["Content-Type"] == "image/png"
    assert body(answer) == blob_read(a.display.name)


def test_ground_truths_carry_provenance_and_download_their_masks(scenario):
    client = client_for(scenario.users["researcher"])
    rows = client.get("/api/ground-truths/", {"source": "drawn"}).json()["results"]
    assert len(rows) == 1
    [c] = rows
    assert c["stage"]["number"] == 2 and c["method"] == "adjudication" and c["agreement"] == 0.5
    assert len(c["readers"]) == 3 and all(r.startswith("reader-") for r in c["readers"])

    radiograph = scenario.cases["c.png"]
    full = client.get(c["mask_url"])
    pixels = png(full)
    assert pixels.shape == (radiograph.height, radiograph.width)
    assert set(np.unique(pixels)) <= {0, 255}
    np.testing.assert_array_equal(pixels == 255, full_size(radiograph, scenario.truths["c.png"]))
    work = client.get(c["mask_url"], {"resolution": "work"})
    np.testing.assert_array_equal(mask_from_png(work.content), scenario.truths["c.png"])
    assert client.get(c["mask_url"], {"resolution": "huge"}).status_code == 400


def test_stages_and_jobs_can_be_read_but_not_edited(scenario):
    client = client_for(scenario.users["admin"])
    stages = client.get("/api/stages/", {"dataset": scenario.dataset.pk}).json()["results"]
    assert [(s["number"], s["n_ground_truths"]) for s in stages] == [(1, 1), (2, 2)]
    # Stages are created from a dataset and settings (test_api_admin.py), never by number.
    assert client.post("/api/stages/", {"number": 3}, format="json").status_code == 400
    assert client.patch(f"/api/stages/{stages[0]['id']}/", {}).status_code == 405
    assert client.delete(f"/api/stages/{stages[0]['id']}/").status_code == 405
    Job.objects.create(kind="train", dataset=scenario.dataset, stage=scenario.stages[1])
    jobs = client.get("/api/jobs/", {"kind": "train"}).json()["results"]
    assert len(jobs) == 1 and jobs[0]["state"] == "queued"
    assert client.post(f"/api/jobs/{jobs[0]['id']}/", {}).status_code == 405


def test_an_export_is_created_followed_and_downloaded(scenario, django_capture_on_commit_callbacks):
    client = client_for(scenario.users["researcher"])
    with django_capture_on_commit_callbacks(execute=False) as sent:
        answer = client.post(
            "/api/exports/",
            {"dataset": scenario.dataset.pk, "stages": [1, 2], "formats": ["qata", "manifest"]},
            format="json",
        )
    assert answer.status_code == 201 and len(sent) == 1
    created = answer.json()
    assert created["state"] == "queued" and created["created_by"] == "researcher"
    assert created["download_url"] is None
    url = f"/api/exports/{created['id']}/"
    assert client.get(url + "download/").status_code == 409

    export_build_task.apply(args=[created["job"]])
    status = client.get(url).json()
    export = Export.objects.get(pk=created["id"])
    assert status["state"] == "succeeded" and status["progress"] == 1.0
    assert status["n_cases"] == 4 and status["sha256"] == export.sha256
    download = client.get(status["download_url"])
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    assert "attachment" in download["Content-Disposition"]
    assert body(download) == blob_read(export.file.name)

    for method in ("put", "patch", "delete"):
        assert getattr(client, method)(url, {}, format="json").status_code == 405
    listed = client.get("/api/exports/").json()["results"]
    assert [(e["id"], e["created_by"]) for e in listed] == [(export.pk, "researcher")]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"formats": ["tiff"]}, 400, "is not a valid choice"),
        ({"folds": 1, "split": "kfold"}, 400, "greater than or equal to 2"),
        ({"stages": [9]}, 409, "has no stage 9"),
        ({"split": "stored"}, 409, "no train/test split"),
        ({"dataset": 999999}, 404, "dataset 999999 does not exist"),
    ],
)
def test_a_bad_export_request_is_refused_with_the_reason(scenario, body, status, message):
    client = client_for(scenario.users["admin"])
    answer = client.post("/api/exports/", {"dataset": scenario.dataset.pk, **body}, format="json")
    assert answer.status_code == status
    assert message in str(answer.json())
    assert Export.objects.count() == 0


def test_unknown_api_urls_answer_json_404(scenario):
    client = client_for(scenario.users["admin"])
    huge = "9" * 30  # beyond any database integer
    for path in ("/api/nothing/", "/api/datasets/abc/", "/api/exports/1.5/download/",
                 f"/api/datasets/{huge}/", f"/api/ground-truths/{huge}/mask/"):  # fmt: skip
        answer = client.get(path)
        assert answer.status_code == 404 and answer["Content-Type"] == "application/json", path


def test_a_page_or_page_size_that_is_not_a_whole_number_is_refused(scenario):
    client = client_for(scenario.users["admin"])
    assert client.get("/api/radiographs/", {"page_size": 500}).status_code == 200
    for size in ("0", "501", "ten", ""):
        answer = client.get("/api/radiographs/", {"page_size": size})
        assert answer.status_code == 400 and "page_size" in answer.json(), size
    assert client.get("/api/radiographs/", {"page": ""}).status_code == 400
    assert client.get("/api/radiographs/", {"page": 9}).status_code == 404


def test_the_openapi_schema_and_its_docs_are_served(scenario):
    client = APIClient()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/exports/", "/api/exports/{id}/download/", "/api/radiographs/"} <= set(paths)
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/docs/redoc/").status_code == 200


def test_the_api_docs_work_offline(scenario):
    """Hospitals often have no internet: the docs UI comes from our own static files."""
    client = APIClient()
    for url in ("/api/docs/", "/api/docs/redoc/"):
        html = client.get(url).content.decode()
        assert "/static/drf_spectacular_sidecar/" in html
        scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
        # Our static files, and Swagger UI's set-up script from the docs view itself.
        assert scripts and all(src.startswith(("/static/", url)) for src in scripts), scripts
