"""Stage I in Chromium: a full pairwise knockout done with the keyboard only."""

from __future__ import annotations

import pytest
from django.utils import timezone

from annotation.models import Decision, GroundTruth, PairwiseRound, ReviewTask, Stage
from annotation.roles import MD
from tests.browser.conftest import login, press_and_follow, wait_ready
from tests.factories import UserFactory, review_stage

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]


def start_a_pairwise_case(page, live_server, **stage_settings):
    """One single-case pairwise stage (with `stage_settings` applied), an MD signed in and on
    the case's first screen, ready for keys. Returns (stage, md)."""
    stage = review_stage(n_cases=1, mode=Stage.Mode.PAIRWISE, n_networks=2, width=320, height=384)
    if stage_settings:
        Stage.objects.filter(pk=stage.pk).update(**stage_settings)
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/")
    with page.expect_navigation():
        page.get_by_role("link", name="Start").click()
    wait_ready(page)
    return stage, md


def test_a_full_knockout_by_keyboard_only(live_server, page, artifacts_dir):
    stage = review_stage(n_cases=2, mode=Stage.Mode.PAIRWISE, n_networks=3, width=320, height=384)
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/")
    page.screenshot(path=artifacts_dir / "queue.png")
    # Keyboard only: Tab to the stage's Start link and press Enter.
    start = page.get_by_role("link", name="Start")
    for _ in range(30):
        page.keyboard.press("Tab")
        if start.evaluate("el => el === document.activeElement"):
            break
    with page.expect_navigation():
        page.keyboard.press("Enter")
    wait_ready(page)
    task = ReviewTask.objects.get(token=page.url.rstrip("/").split("/")[-1])
    assert task.reader == md and task.stage == stage
    assert page.locator("[data-cm-pane]").count() == 2
    assert page.get_by_text("round 1 of 3").is_visible()
    page.screenshot(path=artifacts_dir / "pairwise-round-1.png")
    # The help overlay lists the choice keys beside the viewer's display keys.
    page.keyboard.press("?")
    help_dialog = page.locator("dialog.cm-help[open]")
    assert "Neither is acceptable" in help_dialog.inner_text()
    assert "Undo this case's last round" in help_dialog.inner_text()
    page.screenshot(path=artifacts_dir / "pairwise-help.png")
    page.keyboard.press("Escape")
    assert page.locator("dialog.cm-help[open]").count() == 0

    for number, key in enumerate(["ArrowLeft", "b", "a"], start=1):
        assert page.get_by_text(f"round {number} of 3").is_visible()
        if number > 1:
            page.screenshot(path=artifacts_dir / f"pairwise-round-{number}.png")
        press_and_follow(page, key)

    rounds = list(PairwiseRound.objects.filter(task=task).order_by("number"))
    assert [r.winner_id for r in rounds] == [
        rounds[0].left_id,
        rounds[1].right_id,
        rounds[2].left_id,
    ]
    assert all(r.time_on_screen_ms > 0 for r in rounds)
    decision = Decision.objects.get(task=task)
    assert (decision.outcome, decision.candidate_id, decision.position) == (
        "chose",
        rounds[2].winner_id,
        1,
    )
    assert GroundTruth.objects.get(radiograph=task.radiograph).mask_id == decision.mask_id
    # The next case is on screen, and review.js measured how long that took.
    assert task.token not in page.url and "/review/t/" in page.url
    ms = page.evaluate("window.cmReview.transitionMs")
    (artifacts_dir / "transition-ms.txt").write_text(f"{ms}\n")
    print(f"\npairwise: decision -> next screen usable in {ms} ms")
    page.screenshot(path=artifacts_dir / "pairwise-next-case.png")


def test_a_choice_key_right_after_closing_the_help_is_not_lost(live_server, page):
    _, md = start_a_pairwise_case(page, live_server)
    page.keyboard.press("?")
    assert page.locator("dialog.cm-help[open]").count() == 1
    page.keyboard.press("Escape")
    assert page.locator("dialog.cm-help[open]").count() == 0
    # A key pressed before the browser has moved focus out of the closed dialog reaches the
    # dialog's Close button first: the dialog must hand it on to the page's choice keys.
    with page.expect_navigation():
        page.evaluate(
            """() => document.querySelector("dialog.cm-help button").dispatchEvent(
                new KeyboardEvent("keydown", {key: "a", bubbles: true, cancelable: true}))"""
        )
    wait_ready(page)
    assert PairwiseRound.objects.filter(task__reader=md).count() == 1
    assert page.get_by_text("round 2 of 2").is_visible()


def test_an_active_reader_keeps_the_case_and_a_lost_case_is_said_at_once(
    live_server, page, artifacts_dir
):
    # A 3-second lease: review.js beats every second.
    _, md = start_a_pairwise_case(page, live_server, lease_seconds=3)
    task = ReviewTask.objects.get(token=page.url.rstrip("/").split("/")[-1])
    beats = lambda: int(page.evaluate("document.documentElement.dataset.leaseBeats || 0"))  # noqa: E731
    # Studying the case, mouse in hand, well past the 3-second lease it was opened with.
    for x in range(8):
        page.mouse.move(100 + 10 * x, 200)
        page.wait_for_timeout(700)
    task.refresh_from_db()
    assert beats() >= 3
    assert task.status == ReviewTask.Status.LEASED
    assert task.lease_expires_at > timezone.now(), "an active reader's lease was let run out"
    # Away from the desk: the page stays open, but nothing renews the lease any more.
    page.wait_for_timeout(1500)
    idle = beats()
    page.wait_for_timeout(3000)
    assert beats() == idle
    # Meanwhile the case went to another reader; back at the desk, the screen says so at once.
    other = UserFactory(roles=[MD])
    ReviewTask.objects.filter(pk=task.pk).update(reader=other, lease_expires_at=timezone.now())
    page.mouse.move(300, 250)
    page.wait_for_function("() => document.documentElement.dataset.leaseLost === '1'", timeout=5000)
    alert = page.locator("[data-review-alert]")
    assert alert.is_visible() and "lease ran out" in alert.inner_text()
    assert page.get_by_role("button", name="A is better").is_disabled()
    page.screenshot(path=artifacts_dir / "pairwise-lease-lost.png")
    assert ReviewTask.objects.get(pk=task.pk).reader == other
