"""Live inference over the API: upload a CXR, poll, fetch the maps; one run through a worker."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Job
from annotation.services.detector import detector_deploy
from annotation.storage import stored_paths
from tests.annotation.cxrfiles import PATIENT_NAME, dicom_bytes, mono2_12bit, png8
from tests.annotation.detecting import registered_model
from tests.factories import UserFactory
from tests.support import jobs_and_logs, wait_for

pytestmark = pytest.mark.django_db


def api(*roles: str) -> tuple[object, APIClient]:
    account = UserFactory(roles=list(roles))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=account).key}")
    return account, client


def upload(client, data: bytes, name: str = "chest.png", **fields):
    return client.post(
        "/api/inference/", {"image": named(data, name), **fields}, format="multipart"
    )


def named(data: bytes, name: str) -> io.BytesIO:
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def deployed(phantom_dataset, broker):
    dataset, _ = phantom_dataset(n_covid=2, n_control=2)
    detector = registered_model(dataset, run="r1", fold=0)
    registered_model(dataset, run="r1", fold=0, purpose="classifier")
    detector_deploy(model_version=detector)
    return dataset, detector


def finish(job: Job, *, covid: bool) -> dict[str, bytes]:
    """What the worker writes for an inference job."""
    files, pngs = {}, {}
    for value, name in enumerate(("xray", "map", "gradcam", "probability")):
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8), 60 * value, np.uint8)).save(buffer, format="PNG")
        pngs[name] = buffer.getvalue()
        files[name] = default_storage.save(
            f"inference/{job.pk}/{name}.png", ContentFile(pngs[name])
        )
    job.state = Job.State.SUCCEEDED
    job.result = {
        "covid": covid, "max_prob": 0.93, "severity": 0.25, "severity_basis": "image",
        "classifier_prob": 0.81, "width": 8, "height": 8, "files": files,
        "model_version": job.params["model_version"], "classifier": job.params["classifier"],
        "ms": {"detector": 120.0, "total": 500.0},
    }  # fmt: skip
    job.save()
    return pngs


def test_an_upload_is_queued_and_its_result_polled_then_its_maps_fetched(
    deployed, broker, django_capture_on_commit_callbacks
):
    _dataset, detector = deployed
    owner, client = api("researcher")
    with django_capture_on_commit_callbacks(execute=True):
        answer = upload(client, png8(), wait=0)
    assert answer.status_code == 202
    pending = answer.json()
    job = Job.objects.get(kind="infer")
    assert (
        broker.job_ids == [job.pk]
        and job.created_by == owner
        and job.params["filename"] == "chest.png"
    )
    assert answer["Location"] == pending["status_url"]
    assert (pending["state"], pending["done"], pending["verdict"]) == ("queued", False, None)
    assert pending["infection_map_url"] is None
    assert client.get(pending["status_url"] + "images/map/").status_code == 409

    pngs = finish(job, covid=True)
    done = client.get(pending["status_url"]).json()
    assert done["done"] and done["state"] == "succeeded"
    assert (done["verdict"], done["covid"], done["severity"]) == ("COVID-19", True, 0.25)
    assert done["max_prob"] == 0.93 and done["model_version"] == detector.pk
    for field, name in (("infection_map_url", "map"), ("gradcam_url", "gradcam")):
        image = client.get(done[field])
        assert image.status_code == 200 and image["Content-Type"] == "image/png"
        assert body(image) == pngs[name]


def test_a_result_finished_within_the_wait_is_answered_at_once(deployed, monkeypatch):
    from annotation.api import views_inference

    def worker_was_quick(*, job, timeout_s):
        assert timeout_s == 7
        finish(job, covid=False)
        return views_inference.inference_result(job=job)

    monkeypatch.setattr(views_inference, "inference_wait", worker_was_quick)
    _owner, client = api("admin")
    answer = upload(client, png8(), wait=7)
    assert answer.status_code == 200
    assert answer.json()["verdict"] == "No COVID-19 infection found"
    assert answer.json()["covid"] is False and answer.json()["xray_url"].endswith("/images/xray/")


def test_a_dicom_upload_keeps_no_patient_name(deployed):
    _owner, client = api("researcher")
    ds, _ = mono2_12bit()
    answer = client.post(
        "/api/inference/",
        {"image": named(dicom_bytes(ds), f"{PATIENT_NAME}.dcm"), "wait": 0},
        format="multipart",
    )
    assert answer.status_code == 202 and answer.json()["filename"] == "upload.dcm"
    assert PATIENT_NAME not in answer.content.decode()


def test_a_bad_file_is_refused_with_the_reason_and_nothing_is_stored(deployed):
    _owner, client = api("researcher")
    before = stored_paths()
    answer = client.post(
        "/api/inference/", {"image": named(b"%PDF-1.4", "notes.pdf")}, format="multipart"
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == "notes.pdf: content is not a PNG, JPEG or DICOM image"
    missing = client.post("/api/inference/", {"wait": 0}, format="multipart")
    assert missing.status_code == 400 and "image" in missing.json()
    assert client.post("/api/inference/", {"image": named(png8(), "a.png"), "dataset": 999999},
                       format="multipart").status_code == 404  # fmt: skip
    assert stored_paths() == before and not Job.objects.filter(kind="infer").exists()


def test_without_a_deployed_detector_the_answer_is_409(phantom_dataset, broker):
    phantom_dataset(n_covid=1, n_control=1)
    _owner, client = api("admin")
    answer = upload(client, png8())
    assert answer.status_code == 409 and "no detector is deployed" in answer.json()["detail"]
    assert broker.messages == []


def test_results_are_private_to_their_owner_and_admins_and_closed_to_mds(deployed):
    _owner, client = api("researcher")
    status_url = upload(client, png8(), wait=0).json()["status_url"]
    finish(Job.objects.get(kind="infer"), covid=True)
    _other, other = api("researcher")
    assert other.get(status_url).status_code == 404
    assert other.get(status_url + "images/map/").status_code == 404
    _admin, admin = api("admin")
    assert admin.get(status_url).status_code == 200
    assert admin.get(status_url + "images/map/").status_code == 200
    _md, md = api("md")
    assert md.get(status_url).status_code == 403
    assert upload(md, png8()).status_code == 403
    assert Job.objects.filter(kind="infer").count() == 1


@pytest.mark.keras
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_answers_an_upload_with_its_infection_map(
    worker_process, phantom_dataset, tmp_path
):
    import keras

    from mlworker.nets import build_segmenter

    dataset, _ = phantom_dataset(n_covid=1, n_control=1)
    detector = registered_model(dataset, run="r1", fold=0)
    model = build_segmenter("unet", "tiny", input_shape=(32, 32, 3), decoder_widths=(8,) * 5)
    keras.saving.save_model(model, tmp_path / "detector.keras")
    detector.weights.save("detector.keras", ContentFile((tmp_path / "detector.keras").read_bytes()))
    detector_deploy(model_version=detector)
    _owner, client = api("researcher")
    xray = np.random.default_rng(0).integers(0, 255, (96, 80), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(xray).save(buffer, format="PNG")
    answer = client.post(
        "/api/inference/", {"image": named(buffer.getvalue(), "x.png"), "wait": 20},
        format="multipart",
    )  # fmt: skip
    assert answer.status_code in (200, 202), answer.content
    print(f"\nupload through a worker: HTTP {answer.status_code}, worker ms {answer.json()['ms']}")
    result = answer.json()

    def finished() -> dict | None:
        polled = client.get(result["status_url"]).json()
        return polled if polled["done"] else None

    if not result["done"]:
        result = wait_for(
            finished,
            what="the inference result",
            timeout=90,
            every=0.5,
            explain=jobs_and_logs(worker_process),
        )
    assert result["state"] == "succeeded", result["error"] or worker_process.log_path.read_text()
    assert result["verdict"] in ("COVID-19", "No COVID-19 infection found")
    assert 0 <= result["severity"] <= 1 and result["gradcam_url"] is None
    infection_map = client.get(result["infection_map_url"])
    picture = Image.open(io.BytesIO(body(infection_map)))
    assert picture.mode == "RGB" and picture.size == (result["width"], result["height"])
