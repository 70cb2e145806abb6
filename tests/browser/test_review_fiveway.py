"""Stage II in Chromium: five-way pick, reject all and draw, refine, a reload mid-drawing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from annotation.models import Candidate, Decision, DrawingDraft, ReviewTask
from annotation.roles import MD
from annotation.storage import blob_read
from cxrio import masks as maskio
from tests.browser.conftest import login, press_and_follow, wait_ready
from tests.browser.harness.support import FitGeometry, editor_png
from tests.factories import UserFactory, review_stage

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]

SIZE = (320, 384)


@pytest.fixture
def md_on_first_case(live_server, page):
    stage = review_stage(n_cases=3, n_networks=4, width=SIZE[0], height=SIZE[1])
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    return stage, md, ReviewTask.objects.get(token=page.url.rstrip("/").split("/")[-1])


def stored_pixels(mask) -> np.ndarray:
    return maskio.mask_from_png(blob_read(mask.png.name))


def open_drawing(page) -> FitGeometry:
    press_and_follow(page, "r")
    assert "/draw" in page.url
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    return FitGeometry(page, ".cm-stage", SIZE)


def drag(page, points):
    page.mouse.move(*points[0])
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*p, steps=5)
    page.mouse.up()


def submit(page):
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    wait_ready(page)


def test_a_five_way_pick_by_key(md_on_first_case, page, artifacts_dir):
    _stage, md, task = md_on_first_case
    assert page.locator("[data-cm-pane][data-position]").count() == 5
    page.screenshot(path=artifacts_dir / "five-way.png")
    page.keyboard.press("c")  # contour view: the viewer's key, not a choice
    page.keyboard.press("4")
    page.wait_for_url(lambda url: task.token not in url)
    wait_ready(page)
    decision = Decision.objects.get(task=task)
    assert (decision.outcome, decision.position) == ("chose", 4)
    assert decision.candidate_id == task.candidate_order[3]
    assert decision.time_on_screen_ms > 0
    print(
        f"\nfive-way: decision -> next screen usable in {page.evaluate('window.cmReview.transitionMs')} ms"
    )


def test_reject_all_then_brush_and_polygon_then_submit(md_on_first_case, page, artifacts_dir):
    _stage, md, task = md_on_first_case
    g = open_drawing(page)
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).setBrushSize(8)")
    stroke = [g.screen(40, 60), g.screen(120, 70)]
    drag(page, stroke)
    page.keyboard.press("p")
    corners = [(150, 180), (280, 200), (260, 330), (170, 310)]
    for corner in corners:
        page.mouse.click(*g.screen(*corner))
    page.keyboard.press("Enter")  # closes and fills the polygon
    drawn = editor_png(page) > 0
    page.screenshot(path=artifacts_dir / "draw-brush-and-polygon.png")
    submit(page)

    decision = Decision.objects.get(task=task)
    assert decision.outcome == "drew" and decision.candidate is None
    # As drawn; the decision's mask is its outline-normalised form.
    assert decision.mask.normalised_from.author == md
    stored = stored_pixels(decision.mask.normalised_from)
    assert (stored == drawn).all()
    expected = Image.new("1", SIZE)
    ImageDraw.Draw(expected).polygon(corners, fill=1)
    inside = np.asarray(expected)
    assert stored[inside].mean() > 0.97  # the polygon's area
    along = [(round(40 + 80 * t), round(60 + 10 * t)) for t in np.linspace(0, 1, 20)]
    assert all(stored[y, x] for x, y in along)  # the brush stroke
    assert stored.sum() < inside.sum() + 3000  # and not much else


def test_refine_a_candidate(md_on_first_case, page, artifacts_dir):
    _stage, md, task = md_on_first_case
    open_drawing(page)
    with page.expect_navigation():
        page.get_by_role("link", name="Refine mask 2").click()
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    g = FitGeometry(page, ".cm-stage", SIZE)
    base = Candidate.objects.get(pk=task.candidate_order[1])
    before = editor_png(page) > 0
    assert (before == stored_pixels(base.mask)).all(), "refining starts from the candidate"
    page.keyboard.press("e")  # eraser: cut a band through the mask
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).setBrushSize(14)")
    ys, xs = np.nonzero(before)
    cy = int(ys.mean())
    drag(page, [g.screen(0, cy), g.screen(SIZE[0] - 1, cy)])
    page.screenshot(path=artifacts_dir / "draw-refine.png")
    submit(page)
    decision = Decision.objects.get(task=task)
    assert (decision.outcome, decision.candidate_id, decision.position) == ("refined", base.pk, 2)
    after = stored_pixels(decision.mask.normalised_from)  # as refined, before normalising
    assert after.sum() < before.sum() and not (after & ~before).any()


def test_a_reload_in_the_middle_of_drawing_keeps_the_draft(md_on_first_case, page, artifacts_dir):
    _stage, md, task = md_on_first_case
    g = open_drawing(page)
    drag(page, [g.screen(60, 100), g.screen(200, 220), g.screen(250, 120)])
    drawn = editor_png(page)
    # The server copy (debounced PUT), not only the browser's.
    for _ in range(100):
        if DrawingDraft.objects.filter(task=task, reader=md).exists():
            break
        page.wait_for_timeout(100)
    draft = DrawingDraft.objects.get(task=task, reader=md)
    assert (np.asarray(Image.open(io.BytesIO(bytes(draft.png)))) > 0).sum() == (drawn > 0).sum()
    page.evaluate("localStorage.clear()")
    page.reload()
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    assert (editor_png(page) == drawn).all()
    page.screenshot(path=artifacts_dir / "draw-after-reload.png")
    submit(page)
    # The drawing as drawn (the decision's mask is its outline-normalised form).
    assert Decision.objects.get(task=task).mask.normalised_from.area == int((drawn > 0).sum())
    assert not DrawingDraft.objects.filter(task=task).exists()


def test_the_last_pick_is_taken_back_only_through_its_confirmation(md_on_first_case, page):
    _stage, md, task = md_on_first_case
    press_and_follow(page, "3")
    assert task.token not in page.url
    # U acts on the screen in front of the reader: here there is nothing to take back.
    page.keyboard.press("u")
    page.wait_for_timeout(300)
    assert task.token not in page.url
    assert "Nothing to undo on this case" in page.locator("[data-review-alert]").inner_text()
    assert Decision.objects.get(reader=md, revoked_at__isnull=True).task == task
    page.get_by_role("link", name="Undo last decision").click()
    dialog = page.locator("dialog[open]")
    assert "Undo your decision on case 1?" in dialog.inner_text()
    assert "you chose 3" in dialog.inner_text()
    with page.expect_navigation():
        dialog.get_by_role("button", name="Undo case 1").click()
    wait_ready(page)
    assert task.token in page.url
    assert "Your decision was undone" in page.locator("[data-review-alert]").inner_text()
    assert not Decision.objects.filter(reader=md, revoked_at__isnull=True).exists()
    # Chosen again, it counts once.
    press_and_follow(page, "2")
    assert Decision.objects.get(reader=md, revoked_at__isnull=True).position == 2
