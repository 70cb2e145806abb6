"""Every review screen fits the reader's monitor: at 1920×1080 and at 1366×768 the whole image
and every choice are on screen without scrolling the page, also while an alert is shown."""

from __future__ import annotations

import uuid

import pytest

from annotation.models import ReviewTask, Stage
from annotation.roles import MD, SENIOR_MD
from annotation.services.assignment import task_lease_next
from annotation.services.review import pick_record
from tests.browser.conftest import login, press_and_follow, wait_ready
from tests.factories import ModelVersionFactory, UserFactory, review_stage

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]

# The screens themselves, and what is left of them inside a maximised browser window (tabs,
# address bar, task bar take about 110-120 px).
VIEWPORTS = [(1920, 1080), (1366, 768), (1920, 960), (1366, 650)]
# A chest X-ray's usual shape: a little taller than wide.
SIZE = (400, 480)


def assert_fits(page, artifacts_dir, name: str, images: str, controls: list) -> None:
    """At each viewport: no page scrolling, and every image and control wholly on screen."""
    for width, height in VIEWPORTS:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(150)  # a layout pass and the components' resize
        assert page.locator("[data-review-alert]").is_visible(), "the alert is part of the check"
        page.screenshot(path=artifacts_dir / f"{name}-{width}x{height}.png")
        scroll = page.evaluate(
            "[document.scrollingElement.scrollHeight, innerHeight,"
            " document.scrollingElement.scrollWidth, innerWidth]"
        )
        assert scroll[0] <= scroll[1] and scroll[2] <= scroll[3], (name, width, height, scroll)
        boxes = [page.locator(images).nth(i) for i in range(page.locator(images).count())]
        assert boxes, f"no image on the {name} screen"
        for item in boxes + controls:
            box = item.bounding_box()
            assert box is not None and box["width"] > 0, (name, item)
            inside = (
                box["x"] >= 0
                and box["y"] >= 0
                and box["x"] + box["width"] <= width + 0.5
                and box["y"] + box["height"] <= height + 0.5
            )
            assert inside, (name, width, height, item, box)


def md_on_stage(page, live_server, **kwargs):
    stage = review_stage(n_cases=2, width=SIZE[0], height=SIZE[1], **kwargs)
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    return stage, md


def test_pairwise_screen_fits(live_server, page, artifacts_dir):
    md_on_stage(page, live_server, mode=Stage.Mode.PAIRWISE, n_networks=2)
    page.keyboard.press("u")  # nothing to undo yet: an alert says so
    controls = [page.get_by_role("button", name=n) for n in ("A is better", "B is better")]
    controls.append(page.get_by_role("button", name="Neither is acceptable"))
    assert_fits(page, artifacts_dir, "pairwise", "[data-cm-pane]", controls)


def test_nway_screen_fits(live_server, page, artifacts_dir):
    md_on_stage(page, live_server, n_networks=4)
    page.keyboard.press("u")
    controls = [page.get_by_role("button", name=f"Choose {n}", exact=False) for n in range(1, 6)]
    controls.append(page.get_by_role("link", name="Reject all and draw"))
    assert_fits(page, artifacts_dir, "nway", "[data-cm-pane]", controls)


def test_draw_screen_fits(live_server, page, artifacts_dir):
    md_on_stage(page, live_server, n_networks=4)
    press_and_follow(page, "r")
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    page.keyboard.press("Control+Enter")  # an empty mask: the alert says what to do
    controls = [
        page.get_by_role("button", name="Submit mask"),
        page.locator("label.no-infection"),
        page.locator("[data-start-from]").last,
    ]
    assert_fits(page, artifacts_dir, "draw", ".cm-stage", controls)


def test_draw_screen_with_click_to_refine_fits(live_server, page, artifacts_dir):
    stage, _md = md_on_stage(page, live_server, n_networks=4)
    ModelVersionFactory(dataset=stage.dataset, purpose="interactive", deployed=True)
    press_and_follow(page, "r")
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    page.keyboard.press("Control+Enter")
    controls = [page.get_by_role("button", name="Submit mask"), page.locator("label.no-infection")]
    assert_fits(page, artifacts_dir, "draw-refine", ".cm-stage", controls)
    # On the two monitors the click-to-refine tools are in view without scrolling the toolbar.
    for width, height in VIEWPORTS[:2]:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(150)
        for tool in (
            "[data-cm-tool=click]",
            "[data-cm-zone=left_lower]",
            "[data-cm-control=undo-click]",
        ):
            box = page.locator(tool).bounding_box()
            assert box["y"] >= 0 and box["y"] + box["height"] <= height, (tool, width, height, box)
            toolbar = page.locator(".cm-draw > .cm-toolbar").bounding_box()
            assert box["y"] + box["height"] <= toolbar["y"] + toolbar["height"] + 0.5, (tool, box)


def test_adjudication_screen_fits(live_server, page, artifacts_dir):
    stage = review_stage(n_cases=1, n_networks=4, readers_per_case=2, width=SIZE[0], height=SIZE[1])
    for position in (1, 2):
        reader = UserFactory(roles=[MD])
        task = task_lease_next(stage=stage, reader=reader)
        pick = sorted(task.candidate_order)[position - 1]
        pick_record(
            task=task,
            reader=reader,
            position=task.candidate_order.index(pick) + 1,
            idempotency_key=str(uuid.uuid4()),
        )
    assert ReviewTask.objects.filter(kind="adjudication").exists()
    login(page, live_server, UserFactory(roles=[SENIOR_MD]))
    page.goto(f"{live_server.url}/review/s/{stage.pk}/adjudicate")
    wait_ready(page)
    page.keyboard.press("u")
    controls = [page.get_by_role("button", name=f"Choose {n}", exact=False) for n in (1, 2)]
    assert_fits(page, artifacts_dir, "adjudication", "[data-cm-pane]", controls)
