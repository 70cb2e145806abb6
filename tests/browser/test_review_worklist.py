"""Flag and skip on the review screen, then reopen a decided case from the worklist, in Chromium."""

from __future__ import annotations

import pytest

from annotation.models import CaseFlag, Decision, ReviewTask
from annotation.roles import MD
from tests.browser.conftest import login, press_and_follow, wait_ready
from tests.factories import UserFactory, review_stage

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]


def token_of(page) -> str:
    return page.url.rstrip("/").split("/")[-1]


def test_flag_skip_and_reopen_from_the_worklist(live_server, page, artifacts_dir):
    stage = review_stage(n_cases=3, n_networks=3, width=200, height=240)
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    first = token_of(page)
    skipped_case = ReviewTask.objects.get(token=first).radiograph_id

    # Flag: stored for an admin, the reader stays on the case as it is.
    page.get_by_text("Flag or skip this case").click()
    page.get_by_label("Poor image quality").check()
    page.get_by_label("Comment").fill("cut off at the base")
    page.get_by_role("button", name="Flag for an admin").click()
    page.wait_for_function("() => document.documentElement.dataset.caseFlagged === '1'")
    assert "Flagged for an admin" in page.locator("[data-flag-status]").inner_text()
    assert token_of(page) == first
    flag = CaseFlag.objects.get()
    assert (flag.reason, flag.comment, flag.skipped) == (
        "poor_quality",
        "cut off at the base",
        False,
    )
    page.screenshot(path=artifacts_dir / "flagged.png")

    # Skip: the reader goes on to their next case; the skipped one is back in the pool.
    page.get_by_label("Not COVID-19").check()
    with page.expect_navigation():
        page.get_by_role("button", name="Skip: give it to another reader").click()
    wait_ready(page)
    second = token_of(page)
    assert second != first
    assert "skipped" in page.locator("[data-review-alert]").inner_text()
    assert CaseFlag.objects.filter(skipped=True, reason="not_covid").count() == 1
    released = ReviewTask.objects.get(radiograph_id=skipped_case)
    assert released.reader is None and released.status == ReviewTask.Status.OPEN

    # Decide this one, then reopen it from the worklist.
    press_and_follow(page, "1")
    decided = Decision.objects.get(task__token=second)
    assert token_of(page) not in (first, second)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/cases")
    rows = page.locator("[data-worklist] tbody tr")
    assert rows.count() == 1
    assert "Chose a candidate" in rows.first.inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.worklist img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=artifacts_dir / "worklist.png")
    with page.expect_navigation():
        page.get_by_role("button", name="Reopen").click()
    wait_ready(page)
    assert token_of(page) == second
    decided.refresh_from_db()
    assert decided.revoked_at is not None
    assert "open again" in page.locator("ul.messages").inner_text()
    page.screenshot(path=artifacts_dir / "reopened.png")
    # The skipped case never came back to this reader.
    assert not ReviewTask.objects.filter(reader=md, radiograph_id=skipped_case).exists()
