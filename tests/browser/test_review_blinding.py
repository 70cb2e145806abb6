"""The blinding leak test in Chromium: every response an MD's browser gets for a whole stage."""

from __future__ import annotations

import json
import re

import pytest

from annotation import blinding
from annotation.api.serializers_review import REVIEW_FIELDS
from annotation.models import Candidate, Mask, ModelVersion, Radiograph, Stage
from annotation.roles import MD
from tests.annotation.test_api_review_blinding import walk
from tests.annotation.test_blinding import (
    CHUNKS,
    FORBIDDEN_WORDS,
    assert_blinded_overlay,
    bump_ids,
    split_inline_pngs,
)
from tests.browser.conftest import login, press_and_follow, wait_ready
from tests.browser.harness.support import FitGeometry
from tests.factories import UserFactory, review_stage

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]


@pytest.mark.parametrize("mode", [Stage.Mode.NWAY, Stage.Mode.PAIRWISE])
def test_nothing_the_browser_receives_reveals_a_candidates_source(
    live_server, page, mode, artifacts_dir
):
    bump_ids(8120000)
    stage = review_stage(
        n_cases=3, mode=mode, n_networks=4 if mode == Stage.Mode.NWAY else 2, width=200, height=240
    )
    secrets_ = {
        str(pk)
        for model in (Mask, ModelVersion, Candidate, Radiograph)
        for pk in model.objects.values_list("pk", flat=True)
    }
    secrets_ |= set(Mask.objects.exclude(source_name="").values_list("source_name", flat=True))
    secrets_ |= set(Radiograph.objects.values_list("name", flat=True))
    secrets_ |= set(Candidate.objects.values_list("token", flat=True))
    secrets_ |= {m.pixel_sha256 for m in Mask.objects.all()} | {
        m.png.name for m in Mask.objects.all()
    }

    received = []

    def keep(response):
        try:
            body = response.body()
        except Exception:  # noqa: BLE001 - redirects and aborted prefetches have no body
            body = b""
        received.append((response.url, response.headers, body))

    page.on("response", keep)
    login(page, live_server, UserFactory(roles=[MD]))
    page.goto(f"{live_server.url}/review/")
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    drew = False
    for _ in range(12):
        if "/review/t/" not in page.url:
            break
        screen = page.locator("[data-review-screen]").get_attribute("data-review-screen")
        if screen == "draw" or (screen == "nway" and not drew):
            if screen == "nway":
                press_and_follow(page, "r")
            drew = True
            page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
            g = FitGeometry(page, ".cm-stage", (200, 240))
            page.mouse.move(*g.screen(50, 50))
            page.mouse.down()
            page.mouse.move(*g.screen(120, 150), steps=5)
            page.mouse.up()
            page.wait_for_timeout(1500)  # let the draft autosave reach the server
            with page.expect_navigation():
                page.keyboard.press("Control+Enter")
        elif screen == "pairwise":
            with page.expect_navigation():
                page.keyboard.press("n" if not drew else "b")
        else:
            with page.expect_navigation():
                page.keyboard.press("2")
        if "/review/t/" in page.url:
            wait_ready(page)
    page.screenshot(path=artifacts_dir / "end-of-stage.png")
    page.remove_listener("response", keep)
    assert drew and len(received) > 30

    masks = 0
    for url, headers, body in received:
        path = url.split(live_server.url, 1)[-1]
        header_text = " ".join(f"{k}: {v}" for k, v in headers.items())
        content_type = headers.get("content-type", "")
        dynamic = not path.startswith("/static/")
        text = path + " " + header_text
        if content_type.startswith("application/json") and dynamic and body:
            # The review API's answers: their values (keys are its own field names).
            for kind, name, value in walk(json.loads(body)):
                assert kind == "value" or name in REVIEW_FIELDS, (path, name)
                text += " " + str(value) if kind == "value" else ""
        elif content_type.startswith("text/") and dynamic:
            words, carried = split_inline_pngs(body.decode())
            text += " " + words
            for png in carried:
                masks += 1
                assert_blinded_overlay(png, secrets_, f"a mask carried by {path}")
        if dynamic:
            found = FORBIDDEN_WORDS.search(text)
            assert not found, f"{path} says {found.group(0)!r}"
        elif content_type.startswith(("text/", "application/javascript")):
            text += " " + body.decode(errors="replace")
        for secret in secrets_:
            assert secret not in text, f"{path} contains {secret!r}"
            assert secret.encode() not in body or content_type != "image/png", (
                f"{path} bytes contain {secret!r}"
            )
        if path.startswith("/review/m/") and body:
            masks += 1
            assert [k for k, _ in blinding.png_chunks(body)] == CHUNKS
            assert "last-modified" not in headers
            assert re.fullmatch(r'"[A-Za-z0-9_-]{24}"', headers["etag"])
            assert headers["cache-control"] == "private, max-age=3600, immutable"
    assert masks >= 4
