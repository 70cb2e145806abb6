"""Blinding over the review API: crawl every answer an MD receives while working through a
stage and find nothing that names a candidate, a mask, a network or a source."""

from __future__ import annotations

import re

import numpy as np
import pytest
from rest_framework.test import APIClient

from annotation import blinding
from annotation.models import Decision, ReviewTask, Stage
from tests.annotation.test_api_review import draw, key, lease, png_of, post, reader
from tests.factories import review_stage

pytestmark = pytest.mark.django_db

ETAG = re.compile(r'"[A-Za-z0-9_-]{24}"')
ALLOWED_KEYS = {
    "action", "decided_at", "decision", "detail", "done", "height", "image_url", "kind",
    "knockout", "label", "lease_expires_at", "mask_height", "mask_url", "mask_width", "mode",
    "name", "next_url", "number", "panes", "position", "remaining", "replayed", "round",
    "rounds", "screen", "stage", "task", "total", "votes", "width", "choice", "page_url",
    "prefetch", "lease_seconds",
}  # fmt: skip
INT_KEYS = {
    "done", "height", "mask_height", "mask_width", "number", "position", "remaining",
    "round", "rounds", "stage", "total", "votes", "width", "lease_seconds",
}  # fmt: skip
WORDS = ("manual", "network", "model", "candidate", "source", "unet", "fpn", "densenet",
         "inception", "resnet", "refined", ".keras", "sha")  # fmt: skip


class Recorder:
    """An MD's API client that keeps every answer it gets."""

    def __init__(self, client: APIClient) -> None:
        self.client, self.answers = client, []

    def __getattr__(self, method):
        def call(*args, **kwargs):
            answer = getattr(self.client, method)(*args, **kwargs)
            self.answers.append(answer)
            return answer

        return call


def walk(value, key=None):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, k)
            yield "key", k, None
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, key)
    else:
        yield "value", key, value


def secrets_of(stage: Stage) -> set[str]:
    """Every string that would identify a candidate's mask or its source."""
    found = set()
    for candidate in stage.candidates.select_related("mask").prefetch_related("sources"):
        found |= {candidate.token, candidate.pixel_sha256}
        for mask in (candidate.mask, *candidate.sources.all()):
            found |= {mask.png.name, mask.png.name.rsplit("/", 1)[-1], mask.pixel_sha256}
            if mask.model_version_id:
                found |= {mask.model_version.arch, mask.model_version.encoder}
    return found


@pytest.mark.parametrize("mode", [Stage.Mode.PAIRWISE, Stage.Mode.NWAY])
def test_no_answer_an_md_receives_names_a_candidate_mask_network_or_source(mode):
    stage = review_stage(n_cases=2, mode=mode, n_networks=3)
    _md, plain = reader()
    md = Recorder(plain)
    md.get("/api/review/stages/")
    screen = lease(md, stage)
    while screen is not None:
        md.get(f"/api/review/tasks/{screen['task']}/")
        # What the review screens' JavaScript asks besides: keep the case, the next one ahead.
        md.post(f"/api/review/tasks/{screen['task']}/keep/")
        md.post(f"/api/review/tasks/{screen['task']}/ahead/")
        task = ReviewTask.objects.get(token=screen["task"])
        for pane in screen["panes"]:
            overlay = md.get(pane["mask_url"])
            # The same encoding for every mask, whichever its source.
            option = blinding.resolve_option(task, pane["mask_url"].rsplit(".", 2)[-2])
            pixels = blinding.mask_pixels(
                task.stage.candidates.get(pk=option).mask,
                width=task.radiograph.work_width,
                height=task.radiograph.work_height,
            )
            assert overlay.content == blinding.overlay_png(pixels)
        md.get(screen["image_url"])
        k = key()
        if screen["kind"] == "pairwise":
            n = screen["knockout"]["round"]
            answer = post(md, screen, "round", number=n, choice="neither", idempotency_key=k)
            post(md, screen, "round", number=n, choice="A", idempotency_key=key())  # 409
            screen = answer.json()["screen"]
            pixels = np.zeros((screen["mask_height"], screen["mask_width"]), bool)
            pixels[4:12, 4:12] = True
            draft = f"/api/review/tasks/{screen['task']}/draft/"
            md.put(draft, png_of(pixels), content_type="image/png")
            md.get(draft)
            md.answers.append(draw(md.client, screen, pixels, idempotency_key=k + "d"))
        else:
            post(md, screen, "pick", position=2, idempotency_key=k)
            post(md, screen, "pick", position=2, idempotency_key=k)
            post(md, screen, "pick", position=1, idempotency_key=key())  # 409
        md.get(f"/api/review/tasks/{screen['task']}/")
        answer = md.post(f"/api/review/stages/{stage.pk}/next/", {}, format="json")
        screen = answer.json() if answer.status_code == 200 else None
    last = Decision.objects.order_by("-id").first().idempotency_key
    md.post(f"/api/review/stages/{stage.pk}/undo/", {"idempotency_key": last}, format="json")
    md.get("/api/review/stages/")

    secrets = secrets_of(stage)
    statuses = {a.status_code for a in md.answers}
    assert {200, 201, 409} <= statuses and len(md.answers) > 20
    for answer in md.answers:
        for name in ("Content-Disposition", "Last-Modified"):
            assert not answer.has_header(name), (name, answer)
        # Only images carry an ETag, and all of one form (blinding.image_etag).
        if answer.has_header("ETag"):
            assert ETAG.fullmatch(answer["ETag"]) and answer["Content-Type"] == "image/png"
        if answer.status_code == 204:
            continue
        if answer["Content-Type"] == "image/png":
            # The reader's own drawing in progress is never cached; every review image is.
            own_drawing = answer.request["PATH_INFO"].endswith("/draft/")
            cache = "no-store" if own_drawing else "private, max-age=3600, immutable"
            assert answer["Cache-Control"] == cache
            continue
        text = answer.content.decode()
        assert not any(s in text for s in secrets), text
        for kind, name, value in walk(answer.json()):
            if kind == "key":
                assert name in ALLOWED_KEYS, (name, text)
            elif isinstance(value, int) and not isinstance(value, bool):
                assert name in INT_KEYS, (name, value, text)
            elif isinstance(value, str):
                assert not any(w in value.lower() for w in WORDS), (name, value)
