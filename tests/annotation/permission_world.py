"""The small world the permission matrix runs in: one of everything each screen and endpoint
needs, with ids for the matrix's paths. Built once per role, so rows never see another role's
writes."""

from __future__ import annotations

import io

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from annotation import blinding
from annotation.models import Job
from annotation.services.assignment import task_lease_next
from annotation.services.exports import export_build, export_request
from annotation.services.flags import case_flag
from annotation.services.stages import stage_create
from tests.annotation.detecting import registered_model
from tests.annotation.exporting import provenance_scenario, user
from tests.factories import DatasetFactory, review_stage

ANON, MD, SENIOR, ADMIN, RESEARCHER = "anonymous", "md", "senior_md", "admin", "researcher"
ROLES = (ANON, MD, SENIOR, ADMIN, RESEARCHER)
RUN = "r1"  # the detector run's name


def png(width: int, height: int) -> bytes:
    pixels = np.zeros((height, width), np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def finished_inference(*, owner, model_version) -> Job:
    """An uploaded CXR's analysis as the worker leaves it."""
    job = Job.objects.create(
        kind=Job.Kind.INFER,
        dataset=model_version.dataset,
        created_by=owner,
        params={"source": "upload", "filename": "a.png", "model_version": model_version.pk},
    )
    files = {
        name: default_storage.save(f"inference/{job.pk}/{name}.png", ContentFile(png(8, 8)))
        for name in ("xray", "map", "probability")
    }
    job.state = Job.State.SUCCEEDED
    job.result = {
        "covid": True, "max_prob": 0.9, "severity": 0.1, "severity_basis": "image",
        "width": 8, "height": 8, "files": files, "ms": {"total": 10.0},
    }  # fmt: skip
    job.save()
    return job


def build_world(tmp_path) -> tuple[dict, dict]:
    """(accounts by role, ids for the matrix's paths)."""
    scenario = provenance_scenario(tmp_path)
    md, other_md = scenario.users["md1"], scenario.users["md2"]
    accounts = {
        MD: md,
        SENIOR: scenario.users["senior"],
        ADMIN: user("admin", "admin"),
        RESEARCHER: user("researcher", "researcher"),
    }
    export = export_request(
        dataset=scenario.dataset, created_by=accounts[RESEARCHER], enqueue=False
    )
    export_build(export=export)
    # A stage in review where this MD and another each hold a case.
    review = review_stage(n_cases=3, n_networks=2)
    mine = task_lease_next(stage=review, reader=md)
    other = task_lease_next(stage=review, reader=other_md)
    flag = case_flag(
        token=other.token, reader=other_md, reason="unsure", idempotency_key="world-flag-01"
    ).flag
    draft = stage_create(dataset=DatasetFactory(), preset="fast-cpu")
    queued = Job.objects.create(kind=Job.Kind.TRAIN, dataset=scenario.dataset)
    detector = registered_model(scenario.dataset, run=RUN, fold=0)
    ids = {
        "dataset": scenario.dataset.pk,
        "radiograph": scenario.cases["a.png"].pk,
        "truth": scenario.cases["c.png"].ground_truth.pk,
        "mask": scenario.cases["c.png"].ground_truth.mask_id,
        "stage": scenario.stages[2].pk,
        "job": export.job_id,
        "export": export.pk,
        "review": review.pk,
        "mine": mine.token,
        "other": other.token,
        "mine_mask": next(iter(blinding.option_tokens(mine).values())),
        "other_mask": next(iter(blinding.option_tokens(other).values())),
        "flag": flag.pk,
        "draft": draft.pk,
        "queued": queued.pk,
        "model": detector.pk,
        "run": RUN,
        "upload": finished_inference(owner=accounts[RESEARCHER], model_version=detector).pk,
        "admin_upload": finished_inference(owner=accounts[ADMIN], model_version=detector).pk,
        "drawing": png(mine.radiograph.work_width, mine.radiograph.work_height),
    }
    return accounts, ids
