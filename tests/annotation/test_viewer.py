"""The infection-map viewer and live inference, with the worker's part simulated."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from annotation.models import Job, Radiograph
from annotation.selectors.inference import inference_result, inference_wait
from annotation.services import jobs as job_services
from annotation.services.detector import DetectorError, detector_deploy
from annotation.services.inference import (
    InferenceInputError,
    case_inference_request,
    inference_request,
)
from annotation.storage import stored_paths
from tests.annotation.cxrfiles import PATIENT_NAME, dicom_bytes, mono2_12bit, png8
from tests.annotation.detecting import registered_model
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker")]


@pytest.fixture
def deployed(phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=2, n_control=2)
    detector = registered_model(dataset, run="r1", fold=0)
    classifier = registered_model(dataset, run="r1", fold=0, purpose="classifier")
    detector_deploy(model_version=detector)
    return dataset, detector, classifier


def _finish(job: Job, *, covid=True, severity=0.125) -> None:
    """What the worker writes for an inference job."""
    files = {}
    for name in ("xray", "map", "gradcam", "probability"):
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(buffer, format="PNG")
        files[name] = default_storage.save(
            f"inference/{job.pk}/{name}.png", ContentFile(buffer.getvalue())
        )
    job.state = Job.State.SUCCEEDED
    job.result = {
        "covid": covid,
        "max_prob": 0.93,
        "severity": severity,
        "severity_basis": "image",
        "classifier_prob": 0.81,
        "width": 8,
        "height": 8,
        "files": files,
        "model_version": job.params["model_version"],
        "classifier": job.params["classifier"],
        "ms": {"detector": 120.0, "classifier": 300.0, "total": 500.0},
    }
    job.save()


def test_an_upload_is_queued_for_the_deployed_detector_on_the_cpu_queue(deployed, broker):
    _dataset, detector, classifier = deployed
    job = inference_request(upload_bytes=png8(96, 80), filename="chest.png", user=None)
    assert job.kind == "infer" and job_services.TASKS["infer"][1] == "default"
    p = job.params
    assert (p["model_version"], p["classifier"], p["filename"]) == (
        detector.pk,
        classifier.pk,
        "chest.png",
    )
    assert (p["width"], p["height"]) == (80, 96)
    assert default_storage.exists(p["image"])


def test_a_dicom_upload_keeps_neither_its_header_nor_its_file_name(deployed):
    ds, _stored = mono2_12bit()
    job = inference_request(upload_bytes=dicom_bytes(ds), filename=f"{PATIENT_NAME}.dcm", user=None)
    kept = default_storage.open(job.params["image"]).read()
    assert kept.startswith(b"\x89PNG") and PATIENT_NAME.encode() not in kept
    assert job.params["filename"] == "upload.dcm" and job.params["format"] == "dicom"


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "file is empty"), (b"%PDF-1.4 not an image", "not a PNG, JPEG or DICOM")],
)
def test_a_bad_upload_is_refused_and_nothing_is_stored(deployed, data, message):
    before = stored_paths()
    with pytest.raises(InferenceInputError, match=message):
        inference_request(upload_bytes=data, filename="x.pdf", user=None)
    assert stored_paths() == before and not Job.objects.filter(kind="infer").exists()


def test_without_a_deployed_detector_nothing_is_queued(phantom_dataset):
    phantom_dataset(n_covid=1, n_control=1)
    with pytest.raises(DetectorError, match="no detector is deployed"):
        inference_request(upload_bytes=png8(), filename="a.png", user=None)
    assert stored_paths(top=["inference-uploads"]) == []


def test_the_upload_page_redirects_to_a_result_page_that_polls_until_done(client, deployed):
    user = UserFactory(roles=["researcher"])
    client.force_login(user)
    upload = SimpleUploadedFile("chest.png", png8(), content_type="image/png")
    response = client.post(reverse("viewer_upload"), {"image": upload})
    job = Job.objects.get(kind="infer")
    assert response.status_code == 302 and response.url == reverse("viewer_job", args=[job.pk])
    waiting = client.get(response.url).content.decode()
    assert "Waiting for a worker" in waiting and 'hx-trigger="every 1s"' in waiting

    _finish(job, severity=0.125)
    panel = client.get(
        response.url + "?part=result", headers={"HX-Request": "true"}
    ).content.decode()
    assert "hx-trigger" not in panel, "a finished result stops polling"
    assert 'id="verdict">COVID-19<' in panel and "12.50 % of the image" in panel
    for name in ("xray", "map", "gradcam"):
        image = client.get(reverse("viewer_image", args=[job.pk, name]))
        assert image["Content-Type"] == "image/png" and b"".join(
            image.streaming_content
        ).startswith(b"\x89PNG")


def test_a_bad_upload_shows_the_reason_on_the_form(client, deployed):
    client.force_login(UserFactory(roles=["admin"]))
    upload = SimpleUploadedFile("notes.txt", b"hello", content_type="text/plain")
    response = client.post(reverse("viewer_upload"), {"image": upload})
    assert response.status_code == 400
    assert "notes.txt: content is not a PNG, JPEG or DICOM image" in response.content.decode()
    assert not Job.objects.filter(kind="infer").exists()


def test_an_upload_result_is_private_to_its_owner_and_admins(client, deployed):
    owner = UserFactory(roles=["researcher"])
    job = inference_request(upload_bytes=png8(), filename="a.png", user=owner)
    _finish(job)
    client.force_login(UserFactory(roles=["researcher"]))
    assert client.get(reverse("viewer_job", args=[job.pk])).status_code == 404
    assert client.get(reverse("viewer_image", args=[job.pk, "map"])).status_code == 404
    client.force_login(UserFactory(roles=["admin"]))
    assert client.get(reverse("viewer_job", args=[job.pk])).status_code == 200
    client.force_login(UserFactory(roles=["md"]))
    assert client.get(reverse("viewer_upload")).status_code == 403


def test_a_case_is_analysed_once_and_shown_with_map_gradcam_verdict_and_severity(client, deployed):
    dataset, detector, classifier = deployed
    radiograph = Radiograph.objects.filter(dataset=dataset).order_by("name").first()
    client.force_login(UserFactory(roles=["researcher"]))
    url = reverse("viewer_case", args=[radiograph.pk])
    assert "Waiting for a worker" in client.get(url).content.decode()
    client.get(url)  # a reload reuses the queued job
    [job] = Job.objects.filter(kind="infer")
    assert job.params == {
        "source": "radiograph",
        "radiograph": radiograph.pk,
        "model_version": detector.pk,
        "classifier": classifier.pk,
    }
    _finish(job, covid=False, severity=0.0)
    html = client.get(url).content.decode()
    assert "No COVID-19 infection found" in html and "Grad-CAM (COVID-19)" in html
    assert 'rel="next"' in html and 'rel="prev"' not in html
    assert inference_result(job=job)["images"] == ["xray", "map", "gradcam", "probability"]


def test_a_failed_case_map_is_shown_and_only_retried_on_request(client, deployed):
    dataset, _detector, _classifier = deployed
    radiograph = Radiograph.objects.filter(dataset=dataset).first()
    job = case_inference_request(radiograph=radiograph, user=None)
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.FAILED, error="Traceback...\nValueError: bad weights"
    )
    client.force_login(UserFactory(roles=["admin"]))
    html = client.get(reverse("viewer_case", args=[radiograph.pk])).content.decode()
    assert "The analysis failed: ValueError: bad weights" in html
    assert Job.objects.filter(kind="infer").count() == 1, "reloading must not queue it again"
    client.post(reverse("viewer_case_retry", args=[radiograph.pk]))
    assert Job.objects.filter(kind="infer", state="queued").count() == 1


def test_a_case_of_a_dataset_without_a_deployed_detector_says_so(client, phantom_dataset):
    dataset, _ = phantom_dataset(n_covid=1, n_control=1)
    client.force_login(UserFactory(roles=["admin"]))
    response = client.get(reverse("viewer_case", args=[Radiograph.objects.first().pk]))
    assert (
        response.status_code == 409 and "no detector is deployed for" in response.content.decode()
    )
    cases = client.get(reverse("viewer_cases", args=[dataset.pk])).content.decode()
    assert cases.count('data-case="') == 2


def test_waiting_briefly_returns_the_result_as_it_stands(deployed):
    job = inference_request(upload_bytes=png8(), filename="a.png", user=None)
    pending = inference_wait(job=job, timeout_s=0.3, poll_s=0.1)
    assert (pending["state"], pending["done"]) == ("queued", False) and "covid" not in pending
    _finish(job, covid=True)
    done = inference_wait(job=job, timeout_s=5)
    assert done["done"] and done["verdict"] == "COVID-19" and done["severity"] == 0.125


def test_a_map_page_shows_the_colour_scale_zoom_and_the_near_threshold_caveat(client, deployed):
    from annotation.models import GroundTruth
    from tests.factories import mask_of

    dataset, _detector, _classifier = deployed
    radiograph = Radiograph.objects.filter(dataset=dataset, label="covid").first()
    pixels = np.zeros((radiograph.work_height, radiograph.work_width), bool)
    pixels[4:10, 4:10] = True
    mask = mask_of(radiograph, pixels, kind="manual", source_name="m.png")
    GroundTruth.objects.create(radiograph=radiograph, mask=mask, source="manual", method="imported")
    job = case_inference_request(radiograph=radiograph, user=None)
    _finish(job, covid=True)
    job.result = {**job.result, "max_prob": 0.53}
    job.save()
    client.force_login(UserFactory(roles=["researcher"]))
    html = client.get(reverse("viewer_case", args=[radiograph.pk])).content.decode()
    assert 'id="colour-bar"' in html and 'stop-color="#00007f"' in html
    assert 'class="threshold" x1="50%"' in html  # the 0.5 threshold is marked
    assert 'data-zoom="in"' in html and "full resolution" in html
    assert f'src="/cases/masks/{mask.pk}.png"' in html  # the accepted mask beside the map
    assert "within ±0.05 of the 0.5 threshold" in html
    job.result = {**job.result, "max_prob": 0.93}
    job.save()
    html = client.get(reverse("viewer_case", args=[radiograph.pk])).content.decode()
    assert "within ±0.05" not in html and 'id="caveats"' not in html


def test_an_upload_that_is_not_a_frontal_cxr_carries_a_caveat(client, deployed):
    ds, _ = mono2_12bit(96, 80)
    ds.ViewPosition = "LL"
    ds.BodyPartExamined = "CHEST"
    job = inference_request(upload_bytes=dicom_bytes(ds), filename="x.dcm", user=None)
    assert job.params["metadata"]["view_position"] == "LL"
    _finish(job, covid=False)
    client.force_login(UserFactory(roles=["admin"]))
    html = client.get(reverse("viewer_job", args=[job.pk])).content.decode()
    assert "outside what the detector was trained on" in html
    assert "the view position is LL, not a frontal (PA or AP) view" in html


def test_colour_and_shape_caveats():
    from annotation.selectors.inference import input_caveats

    assert input_caveats(metadata={"view_position": "PA"}, width=800, height=900) == []
    found = input_caveats(metadata={"colour": True, "modality": "CT"}, width=2000, height=500)
    assert len(found) == 3 and "colour image" in found[1]


def test_a_colour_photograph_is_marked_colour_and_a_grey_rgb_png_is_not():
    from cxrio.images import decode_image

    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    grey = np.repeat(rng.integers(0, 255, (64, 64, 1), dtype=np.uint8), 3, axis=2)

    def png(a):
        buffer = io.BytesIO()
        Image.fromarray(a).save(buffer, format="PNG")
        return buffer.getvalue()

    assert decode_image(png(colour), max_pixels=10**6).metadata.get("colour") is True
    assert "colour" not in decode_image(png(grey), max_pixels=10**6).metadata
