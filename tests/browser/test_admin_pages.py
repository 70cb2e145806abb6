"""What admins and researchers read: the case browser, a job page that follows its job, and
an infection map with its colour scale, zoom and caveats."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image
from playwright.sync_api import expect

from annotation.models import Job
from annotation.services import jobs as job_services
from annotation.services.detector import detector_deploy
from annotation.services.inference import case_inference_request
from tests.annotation.detecting import registered_model
from tests.annotation.exporting import provenance_scenario
from tests.browser.conftest import login
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _images_loaded(page, selector: str) -> bool:
    return page.locator(selector).evaluate_all(
        "els => els.length > 0 && els.every(e => e.complete && e.naturalWidth > 0)"
    )


def test_the_case_browser_shows_a_case_with_every_mask_and_its_provenance(
    page, live_server, roles_present, tmp_path, artifacts_dir
):
    scenario = provenance_scenario(tmp_path)
    login(page, live_server, UserFactory(roles=["admin"]))
    page.goto(f"{live_server.url}/dashboard/")
    page.locator(f"tr[data-dataset='{scenario.dataset.pk}']").get_by_role(
        "link", name="Cases"
    ).click()
    page.get_by_label("Accepted mask").select_option("yes")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#cases tbody tr")).to_have_count(4)
    page.screenshot(path=artifacts_dir / "case-list.png", full_page=True)

    page.get_by_role("link", name="a.png").click()
    expect(page.locator("#accepted-mask")).to_contain_text("Single reader")
    expect(page.locator(".manual-mask")).to_contain_text("manual, imported from mask_a.png")
    expect(page.locator("#candidates .candidate.accepted")).to_contain_text("Stage 1")
    page.wait_for_function(
        "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.get_by_role("link", name="Next case").click()  # b.png: a network's mask, by majority
    expect(page.locator("#candidates")).to_contain_text("network U-Net · DenseNet-121, fold 1")
    expect(page.locator("#accepted-mask")).to_contain_text("md1, md2")
    page.wait_for_function(
        "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert _images_loaded(page, "#accepted-mask img.mask")
    page.screenshot(path=artifacts_dir / "case-detail.png", full_page=True)


def test_a_job_page_follows_its_job_to_a_failed_import_without_a_reload(
    page, live_server, roles_present, artifacts_dir
):
    job = Job.objects.create(kind="import", params={"file_name": "scans.zip"})
    job_services.job_claim(job_id=job.pk, worker="cpu@host:1")
    job_services.job_progress(job_id=job.pk, progress=0.5, log_line="importing scans.zip")
    login(page, live_server, UserFactory(roles=["admin"]))
    page.goto(f"{live_server.url}/dashboard/jobs/{job.pk}/")
    expect(page.locator("#job-state")).to_have_text("Running")
    expect(page.locator("#job-finished")).to_have_text("—")
    expect(page.locator("#job-log-tail")).to_contain_text("importing scans.zip")
    page.evaluate("window.stillHere = true")  # gone if the page reloads

    result = {
        "dataset": "A", "dry_run": False, "imported": 0, "duplicates": 0, "masks_imported": 0,
        "mask_duplicates": 0, "skipped": 0,
        "rejected": [
            {"name": "upload/scans.zip/a.png", "reason": "not a PNG, JPEG or DICOM file"},
            {"name": "upload/scans.zip/b.dcm", "reason": "the DICOM file has no pixel data"},
        ],
    }  # fmt: skip
    job_services.job_fail(
        job_id=job.pk,
        error="nothing imported: 2 files rejected\na.png: not a PNG…\nb.dcm: no pixel data",
        result=result,
    )
    expect(page.locator("#job-state")).to_have_text("Failed", timeout=10000)
    expect(page.locator("#job-finished")).not_to_have_text("—")
    expect(page.locator(".job-error")).to_contain_text("nothing imported: 2 files rejected")
    rejected = page.locator("table[data-table='rejected'] tbody tr")
    expect(rejected).to_have_count(2)
    expect(rejected.nth(1)).to_contain_text("the DICOM file has no pixel data")
    expect(page.locator("#job-result")).to_contain_text("Cases imported")
    assert page.evaluate("window.stillHere === true"), "the page reloaded"
    page.screenshot(path=artifacts_dir / "job-failed-import.png", full_page=True)


def _finish(job: Job, *, max_prob: float) -> None:
    """What the worker writes for an infection map (a grey CXR and a jet-coloured map)."""
    files = {}
    grey = np.tile(np.linspace(40, 200, 96, dtype=np.uint8), (96, 1))
    colour = np.zeros((96, 96, 3), np.uint8)
    colour[..., 2], colour[30:60, 30:60] = 160, (255, 200, 0)
    for name, pixels in (("xray", grey), ("map", colour), ("probability", grey)):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        files[name] = default_storage.save(
            f"inference/{job.pk}/{name}.png", ContentFile(buffer.getvalue())
        )
    job.state = Job.State.SUCCEEDED
    job.result = {
        "covid": max_prob >= 0.5, "max_prob": max_prob, "severity": 0.02,
        "severity_basis": "image", "classifier_prob": None, "width": 96, "height": 96,
        "files": files, "model_version": job.params["model_version"], "classifier": None,
        "ms": {"detector": 80.0, "total": 150.0},
    }  # fmt: skip
    job.save()


def test_an_infection_map_near_the_threshold_shows_its_scale_zoom_and_caveat(
    page, live_server, roles_present, tmp_path, broker, artifacts_dir
):
    scenario = provenance_scenario(tmp_path)
    detector_deploy(model_version=registered_model(scenario.dataset, run="r1", fold=0))
    case = scenario.cases["b.png"]
    _finish(case_inference_request(radiograph=case, user=None), max_prob=0.52)
    login(page, live_server, UserFactory(roles=["researcher"]))
    page.goto(f"{live_server.url}/viewer/cases/{case.pk}/")
    expect(page.locator("#verdict")).to_have_text("COVID-19")
    expect(page.locator("#colour-bar")).to_be_visible()
    expect(page.locator("#colour-bar")).to_contain_text("threshold 0.5")
    expect(page.locator("#caveat-threshold")).to_contain_text("within ±0.05 of the 0.5 threshold")
    expect(page.locator("#accepted-figure")).to_contain_text("Accepted mask")
    page.wait_for_function(
        "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=artifacts_dir / "infection-map.png", full_page=True)
    width = page.locator("#map-figure img").bounding_box()["width"]
    page.get_by_role("button", name="Zoom in").click()
    expect(page.locator(".panels.zoomable")).to_have_attribute("data-zoom-level", "2")
    assert page.locator("#map-figure img").bounding_box()["width"] > 1.5 * width
    page.locator("#map-figure img").click()
    expect(page.locator(".panels.zoomable")).to_have_attribute("data-zoom-level", "3")
    page.screenshot(path=artifacts_dir / "infection-map-zoomed.png", full_page=True)
    page.get_by_role("button", name="Fit").click()
    expect(page.locator(".panels.zoomable")).to_have_attribute("data-zoom-level", "1")
