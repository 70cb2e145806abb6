"""Undo in Chromium: U takes back this case's last round, nothing else; an earlier case's
decision is undone only through "Undo last decision…", which shows the case and asks first.
Back after a choice shows the decision read-only; the case counter follows every step."""

from __future__ import annotations

import pytest

from annotation.models import Decision, GroundTruth, PairwiseRound, ReviewTask, Stage
from annotation.roles import MD
from tests.browser.conftest import login, press_and_follow, wait_ready
from tests.factories import UserFactory, review_stage

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]


def counter(page) -> str:
    """The case counter as the reader sees it (a screen rendered ahead shows it once fresh)."""
    page.wait_for_selector("[data-review-progress]:not([data-stale])", state="visible")
    return page.locator("[data-review-progress]").inner_text()


def token_of(page) -> str:
    return page.url.rstrip("/").split("/")[-1]


def test_u_undoes_rounds_of_this_case_and_an_earlier_case_only_after_confirming(
    live_server, page, artifacts_dir
):
    stage = review_stage(n_cases=2, mode=Stage.Mode.PAIRWISE, n_networks=3, width=320, height=384)
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    first = ReviewTask.objects.get(token=token_of(page))
    assert counter(page) == "case 1 of 2"
    for key in ("a", "b", "a"):
        press_and_follow(page, key)
    earlier = Decision.objects.get(task=first, reader=md)
    second = ReviewTask.objects.get(token=token_of(page))
    assert second != first and counter(page) == "case 2 of 2"

    press_and_follow(page, "a")
    assert page.get_by_text("round 2 of 3").is_visible() and counter(page) == "case 2 of 2"
    press_and_follow(page, "u")  # the round just played, on this case
    assert token_of(page) == second.token and page.get_by_text("round 1 of 3").is_visible()
    assert "Round 1 was undone" in page.locator("[data-review-alert]").inner_text()
    assert counter(page) == "case 2 of 2"
    assert not PairwiseRound.objects.filter(task=second).exists()
    # Nothing more on this case: U says so and takes back nothing, least of all case 1.
    page.keyboard.press("u")
    page.wait_for_timeout(500)
    assert token_of(page) == second.token
    assert "Nothing to undo on this case" in page.locator("[data-review-alert]").inner_text()
    earlier.refresh_from_db()
    assert earlier.revoked_at is None and PairwiseRound.objects.filter(task=first).count() == 3

    # Undoing case 1 is its own action: it shows the case and its mask, and asks first.
    page.get_by_role("link", name="Undo last decision").click()
    dialog = page.locator("dialog[data-undo-dialog][open]")
    dialog.wait_for()
    assert "Undo your decision on case 1?" in dialog.inner_text()
    assert "you chose" in dialog.inner_text()
    thumb = dialog.locator("img.thumb-mask")
    page.wait_for_function(
        "() => document.querySelector('dialog[open] img.thumb-mask').naturalWidth > 0"
    )
    assert thumb.get_attribute("src").startswith(f"/review/m/{first.token}.")
    page.screenshot(path=artifacts_dir / "undo-confirm.png")
    page.keyboard.press("Enter")  # the focused default keeps the decision
    assert page.locator("dialog[open]").count() == 0
    earlier.refresh_from_db()
    assert earlier.revoked_at is None
    page.get_by_role("link", name="Undo last decision").click()
    with page.expect_navigation():
        page.locator("dialog[open]").get_by_role("button", name="Undo case 1").click()
    wait_ready(page)
    assert token_of(page) == first.token and counter(page) == "case 1 of 2"
    assert page.get_by_text("round 3 of 3").is_visible()  # the last pair, as it was shown
    earlier.refresh_from_db()
    assert earlier.revoked_at is not None
    assert not GroundTruth.objects.filter(radiograph=first.radiograph).exists()
    # Case 2 is as it was: still this reader's, nothing played.
    assert ReviewTask.objects.get(pk=second.pk).status == ReviewTask.Status.LEASED
    assert not PairwiseRound.objects.filter(task=second).exists()


def test_back_after_a_choice_shows_it_read_only_and_labels_stay_a_and_b(
    live_server, page, artifacts_dir
):
    stage = review_stage(n_cases=2, mode=Stage.Mode.PAIRWISE, n_networks=1, width=320, height=384)
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    task = ReviewTask.objects.get(token=token_of(page))
    labels = page.locator("[data-cm-pane]").evaluate_all("els => els.map(e => e.dataset.label)")
    assert labels == ["A", "B"]
    press_and_follow(page, "n")  # neither: draw
    assert "/draw" in page.url
    start = page.locator(".draw-start a[data-start-from]").all_inner_texts()
    assert [t.strip() for t in start] == ["blank", "A", "B"]
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    # Refine A: it starts from the mask shown as A.
    with page.expect_navigation():
        page.get_by_role("link", name="Refine mask A").click()
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    page.screenshot(path=artifacts_dir / "draw-start-from-a-b.png")
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    wait_ready(page)
    assert token_of(page) != task.token and counter(page) == "case 2 of 2"
    decision = Decision.objects.get(task=task)
    assert decision.candidate_id == PairwiseRound.objects.get(task=task).left_id

    page.go_back()
    page.get_by_text("Case 1: you chose A").wait_for()
    assert page.locator("[data-cm-draw]").count() == 0
    assert page.get_by_role("button", name="Undo this decision").is_visible()
    page.screenshot(path=artifacts_dir / "back-decided-read-only.png")
    with page.expect_navigation():
        page.get_by_role("link", name="Go on to your next case").click()
    wait_ready(page)
    assert counter(page) == "case 2 of 2"
    # Back once more, and this time undo it there: the case's pair comes back, as shown.
    page.go_back()
    page.get_by_text("Case 1: you chose A").wait_for()
    with page.expect_navigation():
        page.get_by_role("button", name="Undo this decision").click()
    wait_ready(page)
    assert token_of(page) == task.token and counter(page) == "case 1 of 2"
    assert page.get_by_text("round 1 of 1").is_visible()
    assert Decision.objects.get(pk=decision.pk).revoked_at is not None
