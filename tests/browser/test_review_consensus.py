"""Several readers in Chromium: two tabs racing on one case; disagreement settled by a senior MD."""

from __future__ import annotations

import pytest

from annotation.models import Decision, GroundTruth, ReviewTask
from annotation.roles import MD, SENIOR_MD
from tests.browser.conftest import login, wait_ready
from tests.factories import UserFactory, review_stage

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]


def test_two_tabs_racing_on_one_case_make_one_decision(live_server, page, artifacts_dir):
    stage = review_stage(n_cases=2, n_networks=3, width=240, height=288)
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    other = page.context.new_page()  # the same reader's second tab, on the same case
    other.goto(page.url)
    other.wait_for_function("() => document.documentElement.dataset.reviewReady === '1'")
    task = ReviewTask.objects.get(token=page.url.rstrip("/").split("/")[-1])
    # Both choose at once, different masks, with different request keys.
    page.evaluate("document.querySelector('button[name=position][value=\"1\"]').click()")
    other.evaluate("document.querySelector('button[name=position][value=\"3\"]').click()")
    for tab in (page, other):
        tab.wait_for_url(lambda url: task.token not in url)
        tab.wait_for_function("() => document.documentElement.dataset.reviewReady === '1'")
    decisions = Decision.objects.filter(task=task)
    assert decisions.count() == 1
    assert decisions.get().position in (1, 3)
    # The tab that lost the race says so on the screen it lands on.
    alerts = [tab.locator("[data-review-alert]").inner_text() for tab in (page, other)]
    assert sum("already decided this case" in text for text in alerts) == 1, alerts
    other.screenshot(path=artifacts_dir / "second-tab.png")
    other.close()


def test_readers_who_disagree_go_to_adjudication_and_the_seniors_pick_is_accepted(
    live_server, browser, page, artifacts_dir
):
    stage = review_stage(n_cases=1, n_networks=3, readers_per_case=2, width=240, height=288)
    chosen = []
    for key in ("1", "2"):
        reader = UserFactory(roles=[MD])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        tab = context.new_page()
        login(tab, live_server, reader)
        tab.goto(f"{live_server.url}/review/s/{stage.pk}/next")
        wait_ready(tab)
        task = ReviewTask.objects.get(token=tab.url.rstrip("/").split("/")[-1])
        chosen.append(task.candidate_order[int(key) - 1])
        if chosen[0] == chosen[-1] and len(chosen) == 2:
            # The orders are drawn per task: make the second reader pick a different mask.
            key = str(
                task.candidate_order.index(next(c for c in task.candidate_order if c != chosen[0]))
                + 1
            )
            chosen[-1] = task.candidate_order[int(key) - 1]
        with tab.expect_navigation():
            tab.keyboard.press(key)
        context.close()
    assert not GroundTruth.objects.exists()
    adjudication = ReviewTask.objects.get(stage=stage, kind="adjudication")
    assert adjudication.status == "open"

    senior = UserFactory(roles=[SENIOR_MD])
    login(page, live_server, senior)
    page.goto(f"{live_server.url}/review/")
    page.screenshot(path=artifacts_dir / "adjudication-queue.png")
    with page.expect_navigation():
        page.get_by_role("link", name="Adjudicate").click()
    wait_ready(page)
    assert page.locator("[data-cm-pane][data-position]").count() == 2
    assert page.get_by_text("1 reader", exact=False).first.is_visible()
    page.screenshot(path=artifacts_dir / "adjudication.png")
    adjudication.refresh_from_db()
    accepted = Decision.objects.get(pk=adjudication.candidate_order[1])
    with page.expect_navigation():
        page.keyboard.press("2")
    page.get_by_text("No case waits for adjudication").wait_for()
    truth = GroundTruth.objects.get()
    assert (truth.method, truth.mask_id, truth.agreement) == ("adjudication", accepted.mask_id, 0.5)
    assert senior in truth.readers.all()
    page.screenshot(path=artifacts_dir / "adjudication-done.png")


def test_a_senior_sees_where_the_readers_differ_and_refines_one_of_their_masks(
    live_server, page, artifacts_dir
):
    import uuid

    import numpy as np

    from annotation.services.assignment import task_lease_next
    from annotation.services.review import decision_record
    from annotation.storage import blob_read
    from cxrio import masks as maskio
    from tests.browser.harness.support import FitGeometry, editor_png

    size = (240, 288)
    stage = review_stage(n_cases=1, n_networks=3, readers_per_case=2, width=size[0], height=size[1])
    for position in (1, 2):
        reader = UserFactory(roles=[MD])
        task = task_lease_next(stage=stage, reader=reader)
        pick = task.candidate_order.index(sorted(task.candidate_order)[position - 1]) + 1
        decision_record(task=task, reader=reader, position=pick, idempotency_key=str(uuid.uuid4()))
    senior = UserFactory(roles=[SENIOR_MD])
    login(page, live_server, senior)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/adjudicate")
    wait_ready(page)
    focus = page.locator(".cm-focus-pane canvas").first
    before = focus.screenshot()
    page.keyboard.press("d")
    page.locator("[data-cm-difference][aria-pressed=true]").wait_for()
    assert page.locator(".cm-focus-pane figcaption").inner_text() == "Where they differ"
    assert focus.screenshot() != before
    assert "only" in page.locator(".difference-legend").inner_text()
    page.screenshot(path=artifacts_dir / "adjudication-difference.png")
    # Reject both: draw, starting from the first reader's mask, and cut a band out of it.
    with page.expect_navigation():
        page.keyboard.press("r")
    assert "/draw" in page.url
    with page.expect_navigation():
        page.locator('a[data-start-from][href$="?from=1"]').click()
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    adjudication = ReviewTask.objects.get(stage=stage, kind="adjudication")
    base = Decision.objects.get(pk=adjudication.candidate_order[0])
    start = editor_png(page) > 0
    assert (start == maskio.mask_from_png(blob_read(base.mask.png.name))).all()
    g = FitGeometry(page, ".cm-stage", size)
    page.keyboard.press("e")
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).setBrushSize(14)")
    cy = int(np.nonzero(start)[0].mean())
    page.mouse.move(*g.screen(0, cy))
    page.mouse.down()
    page.mouse.move(*g.screen(size[0] - 1, cy), steps=8)
    page.mouse.up()
    page.screenshot(path=artifacts_dir / "adjudication-refine.png")
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    truth = GroundTruth.objects.get()
    assert truth.method == "adjudication" and truth.mask.author == senior
    assert truth.source in ("refined", "drawn") and truth.agreement == 0.0
    stored = maskio.mask_from_png(blob_read(truth.mask.png.name))
    # Stored in the stage's outline style (cxrio.outline), which rounds the cut edges: the
    # band is gone and the rest stays the reader's mask, give or take that rounding.
    band = slice(cy - 5, cy + 6)
    assert stored.sum() < start.sum() and start[band].any()
    assert stored[band].sum() < 0.2 * start[band].sum()
    assert (stored & ~start).sum() < 0.05 * stored.sum()
