"""Draft autosave of the draw editor: a reload, a crash or a lost connection must not lose the drawing.

The harness page keeps its draft with the review API's real draft endpoint, on a case that a
reader holds (the key is its task token)."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import Image

from annotation.models import DrawingDraft
from annotation.roles import MD
from annotation.services.assignment import task_lease_next
from annotation.services.drafts import draft_save
from tests.browser.harness.support import (
    CSRF_TOKEN,
    FitGeometry,
    HarnessServer,
    chromium,
    editor_png,
    png_bytes,
    preset_mask,
)
from tests.factories import UserFactory, review_stage
from tests.support import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]

IMAGE, WORK = (400, 480), (200, 240)


@pytest.fixture(scope="module")
def server():
    s = HarnessServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def task(server, transactional_db):
    """A case at the working resolution WORK, leased to a reader whose drafts the harness keeps."""
    server.reset()
    stage = review_stage(n_cases=1, width=WORK[0], height=WORK[1])
    reader = UserFactory(roles=[MD])
    server.serve_drafts_for(reader)
    return task_lease_next(stage=stage, reader=reader)


@pytest.fixture
def key(task) -> str:
    return task.token


@pytest.fixture
def context(browser, server, key):
    # Closed before the database is flushed: a page's last autosave may still be on its way.
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


def stored(key: str) -> DrawingDraft | None:
    """The draft the server keeps for the case."""
    return DrawingDraft.objects.filter(task__token=key).first()


def stored_mask(key: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(bytes(stored(key).png)))) > 0


def open_draw(page, server, key: str) -> FitGeometry:
    page.goto(
        f"{server.url}/harness/draw.html?w={IMAGE[0]}&h={IMAGE[1]}&ww={WORK[0]}&wh={WORK[1]}&key={key}"
    )
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    return FitGeometry(page, ".cm-stage", IMAGE, WORK)


def stroke(page, g: FitGeometry, y: float):
    page.mouse.move(*g.screen(60, y))
    page.mouse.down()
    page.mouse.move(*g.screen(340, y), steps=5)
    page.mouse.up()


def status(page) -> str:
    return page.inner_text("[data-cm-draft-status]")


def local_draft(page, key: str) -> dict | None:
    raw = page.evaluate("k => localStorage.getItem(k)", f"cm-draft:{key}")
    return json.loads(raw) if raw else None


def decode_data_url(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_reload_right_after_a_stroke_restores_it_from_this_browser(context, server, key):
    server.draft_failure = 503  # the server never gets it: only the local copy can bring it back
    page = context.new_page()
    g = open_draw(page, server, key)
    stroke(page, g, 200)
    wait_for(lambda: local_draft(page, key), what="the local draft")
    drawn = editor_png(page)
    assert (decode_data_url(local_draft(page, key)["png"]) == drawn).all()
    page.reload()
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    assert (editor_png(page) == drawn).all()
    assert drawn.any()


def test_a_new_browser_gets_the_draft_from_the_server(browser, context, server, key):
    page = context.new_page()
    g = open_draw(page, server, key)
    stroke(page, g, 150)
    stroke(page, g, 300)
    drawn = editor_png(page)
    wait_for(lambda: stored(key), what="the server draft")
    wait_for(lambda: status(page) == "Saved", what="'Saved'")
    put = server.put_log[-1]
    assert put["csrf"] == CSRF_TOKEN and put["content_type"] == "image/png"
    assert put["status"] == 204
    other = browser.new_context(
        viewport={"width": 1280, "height": 900}
    )  # another machine: empty localStorage
    try:
        page2 = other.new_page()
        open_draw(page2, server, key)
        assert (editor_png(page2) == drawn).all()
        assert status(page2) == "Draft restored"
    finally:
        other.close()


@pytest.mark.parametrize("newer", ["server", "local"])
def test_the_newer_of_server_and_local_draft_wins_over_the_initial_mask(
    context, server, task, key, newer
):
    now = datetime.now(UTC)
    server_mask, local_mask = preset_mask(1, *WORK), preset_mask(2, *WORK)
    server_png = png_bytes(Image.fromarray(server_mask.astype(np.uint8) * 255))
    local_png = (
        "data:image/png;base64," + base64.b64encode(png_bytes(Image.fromarray(local_mask))).decode()
    )
    older, newest = (now - timedelta(minutes=5)).isoformat(), now.isoformat()
    draft_save(
        task=task,
        reader=task.reader,
        png=server_png,
        updated_at=datetime.fromisoformat(newest if newer == "server" else older),
    )
    page = context.new_page()
    page.goto(f"{server.url}/harness/viewer.html?n=0")  # same origin, to seed localStorage
    page.evaluate(
        "([k, v]) => localStorage.setItem(k, v)",
        [
            f"cm-draft:{key}",
            json.dumps({"png": local_png, "updated": older if newer == "server" else newest}),
        ],
    )
    page.goto(
        f"{server.url}/harness/draw.html?w={IMAGE[0]}&h={IMAGE[1]}&ww={WORK[0]}&wh={WORK[1]}&key={key}"
        f"&init=/gen/mask.png%3Fw={WORK[0]}%26h={WORK[1]}%26preset=3"
    )
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    expected = server_mask if newer == "server" else local_mask
    assert ((editor_png(page) == 255) == expected).all()
    if newer == "local":  # the server missed those edits: it gets them now
        wait_for(lambda: stored(key).updated_at == now, what="the local draft to reach the server")


def test_offline_keeps_the_draft_locally_and_flushes_it_later(context, server, key, artifacts_dir):
    server.draft_failure = 503
    page = context.new_page()
    g = open_draw(page, server, key)
    stroke(page, g, 240)
    wait_for(lambda: status(page) == "Offline — kept in this browser", what="the offline status")
    page.screenshot(path=artifacts_dir / "draw-offline.png")
    assert local_draft(page, key) is not None
    assert not stored(key) and server.put_log and server.put_log[-1]["status"] == 503
    server.draft_failure = None  # the server is back; the retry (with backoff) delivers it
    wait_for(lambda: stored(key), timeout=8, what="the retried PUT")
    wait_for(lambda: status(page) == "Saved", what="'Saved'")
    assert (stored_mask(key) == (editor_png(page) > 0)).all()


def test_lost_network_then_back_online_flushes_at_once(context, server, key):
    page = context.new_page()
    g = open_draw(page, server, key)
    context.set_offline(True)
    stroke(page, g, 240)
    wait_for(lambda: status(page) == "Offline — kept in this browser", what="the offline status")
    context.set_offline(False)
    wait_for(lambda: stored(key), timeout=3, what="the flush when the browser is back online")


def test_leaving_the_page_before_the_debounce_still_reaches_the_server(context, server, key):
    page = context.new_page()
    g = open_draw(page, server, key)
    stroke(page, g, 240)
    wait_for(lambda: local_draft(page, key), what="the local draft")
    drawn = editor_png(page)
    assert not stored(key), "the PUT waits ~1 s after the last edit"
    page.goto("about:blank")  # pagehide: flushed with fetch keepalive
    wait_for(lambda: stored(key), timeout=5, what="the keepalive flush")
    assert (stored_mask(key) == (drawn > 0)).all()


def test_discard_draft_clears_both_copies(context, server, key):
    page = context.new_page()
    g = open_draw(page, server, key)
    stroke(page, g, 240)
    wait_for(lambda: stored(key), what="the server draft")
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).discardDraft()")
    assert local_draft(page, key) is None
    assert not stored(key)
    page.reload()
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    assert page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).isEmpty()")
