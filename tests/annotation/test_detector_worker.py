"""A detector run, its report, deployment and live inference through a real Celery worker."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image

from annotation.models import Job, ModelVersion, Radiograph
from annotation.selectors.inference import inference_result
from annotation.selectors.report import run_report
from annotation.services.detector import detector_deploy, detector_launch
from annotation.services.inference import case_inference_request, inference_request
from cxrio.images import encode_png
from tests.annotation.detecting import detector_dataset
from tests.factories import UserFactory
from tests.support import wait_for, wait_for_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _succeed(jobs: list[Job], worker, timeout: float = 150) -> None:
    for job in jobs:
        wait_for_job(job, worker=worker, timeout=timeout)
        assert job.state == Job.State.SUCCEEDED, job.error or worker.log_path.read_text()[-4000:]


def _png(path: str) -> Image.Image:
    with default_storage.open(path, "rb") as handle:
        return Image.open(io.BytesIO(handle.read()))


def test_a_worker_trains_evaluates_and_then_maps_cases_and_uploads(
    worker_process, phantom_dataset, client
):
    dataset, _ = detector_dataset(phantom_dataset, n_covid=6, n_control=6, size=64)
    launched = detector_launch(
        dataset=dataset,
        config={
            "networks": [{"arch": "unet", "encoder": "tiny"}],
            "protocol": "split",
            "folds": 1,
            "epochs": 1,
            "batch_size": 4,
            "image_size": 32,
            "classifier_epochs": 1,
        },
    )
    assert [j.kind for j in launched.jobs] == ["detector", "classifier"]
    _succeed(launched.jobs, worker_process)
    assert all(j.worker.startswith(worker_process.hostname) for j in launched.jobs)

    report = run_report(run=launched.run)
    [network] = report.networks
    n_test = len(launched.jobs[0].params["test"])
    assert report.complete and network.case.cumulative_counts.n == n_test
    assert network.pixel.cumulative_counts.n == n_test * 32 * 32
    assert network.params_trainable > 0 and network.ms_per_sample > 0
    assert report.classifiers[0].case.cumulative_counts.n == n_test

    client.force_login(UserFactory(roles=["admin"]))
    page = client.get(reverse("detector_report", args=[launched.run]))
    assert page.status_code == 200 and 'data-network="unet/tiny"' in page.content.decode()

    detector = ModelVersion.objects.get(purpose="detector")
    detector_deploy(model_version=detector)
    radiograph = Radiograph.objects.filter(dataset=dataset, label="covid").first()
    case_job = case_inference_request(radiograph=radiograph, user=None)
    xray = np.random.default_rng(0).integers(0, 255, (1024, 1024), dtype=np.uint8)
    started = time.monotonic()
    upload_job = inference_request(upload_bytes=encode_png(xray), filename="big.png", user=None)
    _succeed([upload_job], worker_process, timeout=60)
    seconds = time.monotonic() - started
    _succeed([case_job], worker_process, timeout=60)

    upload = inference_result(job=upload_job)
    assert upload["images"] == ["xray", "map", "gradcam", "probability"]
    assert _png(upload_job.result["files"]["map"]).size == (1024, 1024)
    assert _png(upload_job.result["files"]["map"]).mode == "RGB"
    assert isinstance(upload["covid"], bool) and 0 <= upload["severity"] <= 1
    assert upload["classifier"] == ModelVersion.objects.get(purpose="classifier").pk
    case = inference_result(job=case_job)
    assert case["radiograph"] == radiograph.pk and case["model_version"] == detector.pk
    size = (radiograph.work_width, radiograph.work_height)
    assert _png(case_job.result["files"]["gradcam"]).size == size
    assert seconds < 30, f"an upload took {seconds:.1f} s through the worker"
    print(f"\nupload 1024x1024 tiny/32: {seconds:.2f} s end to end, worker ms {upload['ms']}")


def test_a_run_with_the_ensemble_option_evaluates_and_deploys_the_mean_of_its_networks(
    worker_process, phantom_dataset, client
):
    dataset, _ = detector_dataset(phantom_dataset, n_covid=6, n_control=6, size=64)
    launched = detector_launch(
        dataset=dataset,
        config={
            "networks": [{"arch": "unet", "encoder": "tiny"}, {"arch": "dla", "encoder": "tiny"}],
            "protocol": "split",
            "folds": 1,
            "epochs": 1,
            "batch_size": 4,
            "image_size": 32,
            "with_classifier": False,
            "ensemble": True,
        },
    )
    _succeed(launched.jobs, worker_process)
    # The network that finished last queued the ensemble of the fold, once.
    wait_for(
        lambda: Job.objects.filter(kind="ensemble", params__run=launched.run).exists(),
        what="the ensemble job to be queued",
        timeout=30,
    )
    [ensemble_job] = Job.objects.filter(kind="ensemble", params__run=launched.run)
    _succeed([ensemble_job], worker_process)
    members = ModelVersion.objects.filter(job__in=launched.jobs)
    ensemble = ModelVersion.objects.get(job=ensemble_job)
    assert (ensemble.purpose, ensemble.arch) == ("detector", "ensemble")
    assert sorted(ensemble.metrics["members"]) == sorted(m.pk for m in members)
    assert ensemble.metrics["evaluation"]["n_cases"] == len(launched.jobs[0].params["test"])
    assert ensemble.params_trainable == sum(m.params_trainable for m in members)

    report = run_report(run=launched.run)
    gain = report.ensemble_gain
    assert report.complete and gain is not None
    assert gain["best"].arch in ("unet", "dla") and not report.can_ensemble
    client.force_login(UserFactory(roles=["admin"]))
    page = client.get(reverse("detector_report", args=[launched.run])).content.decode()
    assert 'data-network="ensemble/mean"' in page and 'id="ensemble-gain"' in page

    # Deployed, the ensemble draws the infection maps like a single network would.
    detector_deploy(model_version=ensemble)
    radiograph = Radiograph.objects.filter(dataset=dataset, label="covid").first()
    case_job = case_inference_request(radiograph=radiograph, user=None)
    _succeed([case_job], worker_process, timeout=60)
    case = inference_result(job=case_job)
    assert case["model_version"] == ensemble.pk
    size = (radiograph.work_width, radiograph.work_height)
    assert _png(case_job.result["files"]["map"]).size == size
