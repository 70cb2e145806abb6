"""schemathesis over the OpenAPI schema, in-process against the WSGI app.

Every operation gets positive and negative cases; the checks are schemathesis' defaults: no 5xx,
documented status codes, content types and bodies, bad input refused, good input accepted.
The review API is called as an MD, everything else as an admin. Writes are reachable: the
world is seeded per operation (a dataset with every kind of provenance, a built export, a
deployed detector and a finished analysis for the data and inference endpoints; a pairwise
and an N-way stage in review, where the MD holds a case, for the review API), and positive
cases of operations that name a case by an unguessable token get a real one. Uploads are the
one thing a schema cannot describe (the bytes must decode, a drawing must have the case's
size), so positive uploads carry a real PNG of the right size; negative ones keep whatever
schemathesis made up.
"""

from __future__ import annotations

import io
import os
from functools import cached_property

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from PIL import Image
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.transport.serialization import Binary

from annotation import blinding
from annotation.models import Job
from annotation.services.assignment import task_lease_next
from annotation.services.detector import detector_deploy
from annotation.services.exports import export_build, export_request
from annotation.services.stages import stage_create
from tests.annotation.detecting import registered_model
from tests.annotation.exporting import provenance_scenario, user
from tests.annotation.permission_world import finished_inference
from tests.factories import DatasetFactory, review_stage


@pytest.fixture
def in_process_requests():
    """Calls into the WSGI app must not close the test's database connection at the end of
    each request (Django's own test client disconnects the same handlers)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def png(width: int, height: int) -> bytes:
    pixels = np.zeros((height, width), np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class World:
    """What an operation needs, built on first use (so each operation builds only its part)."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path

    @cached_property
    def admin_token(self) -> str:
        scenario = provenance_scenario(self.tmp_path)
        admin = user("admin", "admin")
        export = export_request(dataset=scenario.dataset, created_by=admin, enqueue=False)
        export_build(export=export)
        detector = detector_deploy(model_version=registered_model(scenario.dataset, run="r1"))
        draft = stage_create(dataset=DatasetFactory(), preset="fast-cpu")
        # The id a positive case uses for each collection's {id}.
        self.ids = {
            "datasets": scenario.dataset.pk,
            "radiographs": scenario.cases["a.png"].pk,
            "ground-truths": scenario.cases["c.png"].ground_truth.pk,
            "stages": draft.pk,
            "jobs": Job.objects.create(kind=Job.Kind.TRAIN, dataset=scenario.dataset).pk,
            "exports": export.pk,
            "inference": finished_inference(owner=admin, model_version=detector).pk,
        }
        return Token.objects.create(user=admin).key

    @cached_property
    def md_token(self) -> str:
        md = user("md", "md")
        self.nway = review_stage(n_cases=2, n_networks=3)
        self.pairwise = review_stage(n_cases=1, mode="pairwise", n_networks=3)
        self.nway_task = task_lease_next(stage=self.nway, reader=md)
        self.pairwise_task = task_lease_next(stage=self.pairwise, reader=md)
        return Token.objects.create(user=md).key

    def seed(self, case) -> None:
        """Real ids and tokens, and real images, in a positive case."""
        path, params = case.operation.path, case.path_parameters or {}
        body = case.body if isinstance(case.body, dict) else {}
        if "id" in params:
            params["id"] = str(self.ids[path.split("/")[2]])
        if path.startswith("/api/inference/") and "image" in body:
            body["image"] = png(80, 96)
            body["wait"] = 0  # no worker runs here: answer 202 at once
        if not path.startswith("/api/review/"):
            return
        task = self.pairwise_task if path.endswith("/round/") else self.nway_task
        if "stage_id" in params:
            params["stage_id"] = task.stage_id
        if "token" in params:
            params["token"] = task.token
        if "opaque" in params:
            params["opaque"] = next(iter(blinding.option_tokens(task).values()))
        if body.get("reason") == "other" and not str(body.get("comment", "")).strip():
            body["comment"] = "see the image"  # 'other' says what in its comment
        if path.endswith("/refine/"):  # JSON: the mask is a data URL, the clicks on the image
            body.update(mask=None, clicks=[{"x": 1, "y": 1, "positive": True}], zones=[])
            return
        if path.endswith("/drawing/"):  # no click-to-refine model here: no clicks to record
            body.update(clicks="[]", zones="[]")
            body.pop("interactive_model", None)
        if "mask" in body:
            body["mask"] = png(task.radiograph.work_width, task.radiograph.work_height)
        if path.endswith("/draft/") and case.method == "PUT":  # the body is the drawing itself
            drawing = Binary(png(task.radiograph.work_width, task.radiograph.work_height))
            # Set past schemathesis' change tracking, which would revalidate raw bytes against
            # the binary schema and count this valid drawing as invalid data.
            object.__setattr__(case, "body", drawing)
            if "base" in body:
                body["no_infection"] = False  # a refinement is never empty


@pytest.fixture
def world(db, tmp_path, in_process_requests, broker) -> World:
    return World(tmp_path)  # `broker` keeps the messages: no broker in this test


def _load_schema():
    # Loaded at collection: the schema view needs no database. (schemathesis' lazy
    # from_fixture loader does not work with pytest 9, which dropped Node._nodeid.)
    from config.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


schema = _load_schema()


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("SCHEMATHESIS_EXAMPLES", 6)),
    derandomize=True,  # the same cases on every run; raise SCHEMATHESIS_EXAMPLES to explore
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_never_fails_and_answers_as_documented(case, world):
    reader = case.operation.path.startswith("/api/review/")
    token = world.md_token if reader else world.admin_token
    if case.meta is not None and case.meta.generation.mode.is_positive:
        world.seed(case)
    if case.operation.path.endswith("/refine/"):
        # No click-to-refine model or worker here: 503 that says so is the documented answer.
        case.call_and_validate(
            headers={"Authorization": f"Token {token}"},
            excluded_checks=[not_a_server_error],
            additional_checks=[only_click_to_refine_unavailable],
        )
        return
    case.call_and_validate(headers={"Authorization": f"Token {token}"})


def only_click_to_refine_unavailable(ctx, response, case):
    """Any 5xx but 503 with the reason in words is a server error."""
    detail = response.json().get("detail", "") if response.status_code == 503 else ""
    if response.status_code >= 500 and "click-to-refine" not in detail.lower():
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")
