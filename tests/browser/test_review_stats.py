"""The statistics page in Chromium, after a seeded and simulated stage."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from annotation.models import Stage
from annotation.roles import MD, RESEARCHER
from tests.browser.conftest import login
from tests.factories import DatasetFactory, RadiographFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]


def test_the_statistics_page_after_a_seeded_stage(live_server, page, artifacts_dir):
    dataset = DatasetFactory(name="Seeded for statistics")
    for _ in range(6):
        RadiographFactory(dataset=dataset, width=96, height=112)
    UserFactory(roles=[MD], username="md-a")
    UserFactory(roles=[MD], username="md-b")
    call_command(
        "seed_review_demo",
        dataset=dataset.name,
        mode="pairwise",
        networks=3,
        readers=2,
        simulate=True,
    )
    stage = Stage.objects.get(dataset=dataset)
    login(page, live_server, UserFactory(roles=[RESEARCHER]))
    page.goto(f"{live_server.url}/stats/")
    page.get_by_role("link", name=f"Stage {stage.number}").first.click()
    page.wait_for_selector("[data-stats=progress]")
    progress = page.locator("[data-stats=progress]").inner_text()
    assert "Cases\t6" in progress and "Reader tasks done\t12 of 12" in progress
    assert page.locator("[data-stats=win-rates] tbody tr").count() == 3
    assert page.locator("[data-stats=position] tbody tr").count() == 1
    assert "Fleiss" in page.locator("[data-stats=agreement]").inner_text()
    page.screenshot(path=artifacts_dir / "statistics.png", full_page=True)
    # Bradley–Terry strengths and chosen positions always; masks by origin once some are accepted.
    assert page.locator("section img.plot").count() == 2 + (stage.ground_truths.count() > 0)
