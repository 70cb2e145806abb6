"""A choice the server did not store is never lost silently: signed out in another tab, or
the connection gone, the screen says so, keeps the choice, and sends it (once) when it can."""

from __future__ import annotations

import pytest

from annotation.models import Decision, PairwiseRound, ReviewTask, Stage
from annotation.roles import MD
from tests.browser.conftest import login, wait_ready
from tests.factories import PASSWORD, UserFactory, review_stage

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]


def test_a_choice_made_after_signing_out_elsewhere_is_kept_and_stored_once_after_signing_in(
    live_server, page, artifacts_dir
):
    stage = review_stage(n_cases=1, mode=Stage.Mode.PAIRWISE, n_networks=3, width=320, height=384)
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    task = ReviewTask.objects.get(token=page.url.rstrip("/").split("/")[-1])
    key = page.locator("[data-review-form] input[name=idempotency_key]").input_value()

    # The same reader logs out in another tab of the same browser.
    other = page.context.new_page()
    other.goto(f"{live_server.url}/review/")
    with other.expect_navigation():
        other.get_by_role("button", name="Log out").click()
    other.close()

    page.keyboard.press("a")
    page.wait_for_function("() => document.documentElement.dataset.pending === 'signed-out'")
    alert = page.locator("[data-review-alert]")
    assert "signed out" in alert.inner_text() and "NOT stored" in alert.inner_text()
    assert "HTTP 200" not in alert.inner_text()
    assert not PairwiseRound.objects.filter(task=task).exists()
    assert page.get_by_text("round 1 of 3").is_visible()  # still on the same pair
    page.screenshot(path=artifacts_dir / "signed-out-choice-kept.png")

    # Signing in again in a new tab sends the kept choice, with its key: stored once.
    with page.context.expect_page() as opened:
        alert.get_by_role("link", name="Sign in again").click()
    tab = opened.value
    tab.wait_for_load_state()
    tab.locator("#id_username").fill(md.username)
    tab.locator("#id_password").fill(PASSWORD)
    with page.expect_navigation():
        tab.get_by_role("button", name="Log in").click()
    assert "signed in again" in tab.locator("h1").inner_text()
    tab.screenshot(path=artifacts_dir / "signed-in-tab.png")
    wait_ready(page)
    assert page.get_by_text("round 2 of 3").is_visible()
    rounds = PairwiseRound.objects.filter(task=task)
    assert rounds.count() == 1 and rounds.get().idempotency_key == key
    # Sending again changes nothing.
    page.evaluate(
        """(key) => fetch(document.querySelector('[data-review-form]').dataset.apiUrl, {
            method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json', 'X-CSRFToken':
                      document.cookie.match(/csrftoken=([^;]+)/)[1]},
            body: JSON.stringify({number: 1, choice: 'A', idempotency_key: key})})""",
        key,
    )
    assert PairwiseRound.objects.filter(task=task).count() == 1

    # The connection drops: the choice is kept, said, and sent when it comes back.
    page.context.set_offline(True)
    page.keyboard.press("b")
    page.wait_for_function(
        "() => document.documentElement.dataset.pending === 'offline'", timeout=20000
    )
    assert "NOT stored" in alert.inner_text()
    assert PairwiseRound.objects.filter(task=task).count() == 1
    page.screenshot(path=artifacts_dir / "offline-choice-kept.png")
    with page.expect_navigation():
        page.context.set_offline(False)
    wait_ready(page)
    assert page.get_by_text("round 3 of 3").is_visible()
    assert PairwiseRound.objects.filter(task=task).count() == 2


def test_a_drawing_sent_without_a_connection_is_kept_and_stored_once_when_it_is_back(
    live_server, page, artifacts_dir
):
    stage = review_stage(n_cases=2, n_networks=2, width=320, height=384)
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    task = ReviewTask.objects.get(token=page.url.rstrip("/").split("/")[-1])
    with page.expect_navigation():
        page.keyboard.press("r")
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    box = page.locator(".cm-stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=8)
    page.mouse.up()
    page.context.set_offline(True)
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        "() => document.documentElement.dataset.pending === 'offline'", timeout=20000
    )
    assert "NOT stored" in page.locator("[data-review-alert]").inner_text()
    assert not Decision.objects.filter(task=task).exists()
    # The drawing is still on the screen.
    assert not page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).isEmpty()")
    page.screenshot(path=artifacts_dir / "drawing-kept-offline.png")
    with page.expect_navigation():
        page.context.set_offline(False)
    wait_ready(page)
    decision = Decision.objects.get(task=task)
    assert decision.outcome == "drew" and decision.mask.area > 0
