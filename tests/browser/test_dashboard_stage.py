"""An admin launches a stage from the dashboard and watches its progress bars move."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login
from tests.factories import UserFactory
from tests.support import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]


def test_a_stage_launched_from_the_dashboard_shows_live_progress(
    page, live_server, roles_present, phantom_dataset, worker_process, artifacts_dir
):
    dataset, _ = phantom_dataset(n_covid=8, n_control=2, manual_fraction=1.0)
    login(page, live_server, UserFactory(roles=["admin"]))
    page.goto(f"{live_server.url}/dashboard/")
    row = page.locator(f"tr[data-dataset='{dataset.pk}']")
    expect(row).to_contain_text("8")  # COVID-19 cases
    expect(page.locator("#workers")).to_contain_text("online")
    page.screenshot(path=artifacts_dir / "dashboard.png", full_page=True)

    row.get_by_role("link", name="New stage").click()
    page.get_by_label("Preset").select_option("fast-cpu")
    page.wait_for_load_state("networkidle")  # the preset re-renders the form (htmx)
    expect(page.get_by_label("Epochs")).to_have_value("3")
    # One small network, enough epochs that progress is visible between polls (every 2 s)
    # also on a fast machine.
    checked = page.locator("input[name=networks]:checked")
    while checked.count():
        checked.first.uncheck()
    page.locator("input[name=networks][value='unet/tiny']").check()
    page.get_by_label("Epochs").fill("40")
    page.screenshot(path=artifacts_dir / "stage-form.png", full_page=True)
    page.get_by_role("button", name="Create stage").click()
    expect(page.locator("#plan")).to_contain_text("Launching trains on 8 cases")
    page.get_by_role("button", name="Launch stage").click()
    expect(page.locator("#stage-status")).to_have_text("Training")

    # The job rows refresh themselves (htmx): record what the bars show without reloading.
    seen: list[tuple[int, ...]] = []

    def reviewing() -> bool:
        values = tuple(
            int(v)
            for v in page.locator("#stage-jobs progress").evaluate_all(
                "els => els.map(e => e.value)"
            )
        )
        if not seen or values != seen[-1]:
            seen.append(values)
        if "stage reviewing" in page.locator("#stage-jobs .summary").inner_text():
            return True
        if len(seen) == 3:
            page.screenshot(path=artifacts_dir / "stage-progress.png", full_page=True)
        return False

    wait_for(
        reviewing,
        what="the stage to reach review",
        timeout=300,
        every=0.3,
        explain=lambda: f"progress bars seen: {seen[-5:]}",
    )
    page.screenshot(path=artifacts_dir / "stage-done.png", full_page=True)
    assert "stage reviewing" in page.locator("#stage-jobs .summary").inner_text(), seen[-5:]
    # The bars moved through intermediate values without a reload, not just 0 → 100.
    partial = {v for values in seen for v in values if 0 < v < 100}
    assert len(partial) >= 2, seen
    assert all(v == 100 for v in seen[-1])
