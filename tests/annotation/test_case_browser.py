"""The case browser: a dataset's cases with their masks and where each came from, for admins
and researchers only, with or without a detector."""

from __future__ import annotations

import pytest

from tests.annotation.exporting import provenance_scenario
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def scenario(tmp_path):
    return provenance_scenario(tmp_path)


@pytest.mark.parametrize("role", ["md", "senior_md"])
def test_readers_never_reach_the_case_browser(client, scenario, role):
    client.force_login(UserFactory(roles=[role]))
    b = scenario.cases["b.png"]
    assert client.get(f"/viewer/datasets/{scenario.dataset.pk}/").status_code == 403
    assert client.get(f"/cases/{b.pk}/").status_code == 403
    assert client.get(f"/cases/{b.pk}/image.png").status_code == 403
    assert client.get(f"/cases/masks/{b.ground_truth.mask_id}.png").status_code == 403


@pytest.mark.parametrize("role", ["admin", "researcher"])
def test_a_case_shows_its_masks_and_provenance_without_a_detector(client, scenario, role):
    client.force_login(UserFactory(roles=[role]))
    b = scenario.cases["b.png"]
    response = client.get(f"/cases/{b.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'src="/cases/{b.pk}/image.png"' in html
    assert f'src="/cases/masks/{b.ground_truth.mask_id}.png"' in html
    assert "network U-Net · DenseNet-121, fold 1" in html  # the candidate's source, unblinded
    assert "Majority" in html and "md1, md2" in html and "Stage 2" in html
    assert f'href="/viewer/cases/{b.pk}/"' not in html  # no detector deployed: no map link
    a = scenario.cases["a.png"]
    html = client.get(f"/cases/{a.pk}/").content.decode()
    assert "manual, imported from mask_a.png" in html and "Single reader" in html
    image = client.get(f"/cases/{b.pk}/image.png")
    assert image["Content-Type"] == "image/png"
    mask = client.get(f"/cases/masks/{b.ground_truth.mask_id}.png")
    assert mask.content.startswith(b"\x89PNG")


def test_the_list_filters_and_pages(client, scenario):
    client.force_login(UserFactory(roles=["admin"]))
    url = f"/viewer/datasets/{scenario.dataset.pk}/"

    def names(query: str = "") -> set[str]:
        rows = client.get(url + query).context["page"].object_list
        return {r.name for r in rows}

    assert names() == {"a.png", "b.png", "c.png", "d.png", "e.png", "f.png"}
    assert names("?accepted=yes") == {"a.png", "b.png", "c.png", "d.png"}
    assert names("?accepted=no") == {"e.png", "f.png"}
    assert names("?label=normal") == {"e.png"}
    assert names(f"?stage={scenario.stages[2].pk}") == {"b.png", "c.png"}
    assert names("?stage=999999&label=bogus") == names()  # unknown values filter nothing
    html = client.get(url + "?accepted=yes").content.decode()
    assert "Network · majority · Stage 2" in html


@pytest.mark.parametrize("role", ["admin", "researcher"])
def test_a_normalised_mask_is_labelled_and_its_original_shown_for_provenance(client, role):
    """Readers saw outline-normalised candidates; the case browser says so and shows the masks
    as drawn or predicted beside them."""
    import numpy as np

    from annotation.models import GroundTruth, Mask, ModelVersion, Stage
    from annotation.services.candidates import candidates_offer, mask_create
    from mlworker.phantoms._raster import fill_polygon
    from tests.factories import DatasetFactory, RadiographFactory

    dataset = DatasetFactory()
    radiograph = RadiographFactory(dataset=dataset)
    stage = Stage.objects.create(dataset=dataset, number=1, mode="nway", status="reviewing")
    square = fill_polygon(
        np.array([18.0, 44.0, 40.0, 14.0]), np.array([10.0, 14.0, 36.0, 32.0]), 64
    )
    shape = (radiograph.work_height, radiograph.work_width)
    pixels = np.zeros(shape, dtype=bool)
    pixels[: min(64, shape[0]), : min(64, shape[1])] = square[: shape[0], : shape[1]]
    manual = mask_create(radiograph=radiograph, pixels=pixels, kind=Mask.Kind.MANUAL)
    version = ModelVersion.objects.create(
        dataset=dataset, stage=stage, purpose="candidate", arch="unet", encoder="tiny"
    )
    network = mask_create(
        radiograph=radiograph, pixels=np.roll(pixels, 3, axis=1), kind="network",
        model_version=version,
    )  # fmt: skip
    candidates = candidates_offer(stage=stage, radiograph=radiograph, masks=[manual, network])
    shown = candidates[0].mask
    assert shown.normalised_from_id == manual.pk
    GroundTruth.objects.create(
        radiograph=radiograph, mask=shown, stage=stage, source="manual", method="single"
    )
    client.force_login(UserFactory(roles=[role]))
    html = client.get(f"/cases/{radiograph.pk}/").content.decode()
    # Both candidates and the accepted mask are labelled as normalised ...
    assert html.count("outline-normalised</span>") == 3
    assert f"original: mask #{manual.pk}, manual" in html
    # ... and the originals are one click (or one look) away.
    assert f'src="/cases/masks/{manual.pk}.png"' in html  # the accepted mask's original
    assert f'href="/cases/masks/{network.pk}.png"' in html
    assert client.get(f"/cases/masks/{manual.pk}.png").content.startswith(b"\x89PNG")
    # The manual masks panel lists the mask as imported, not its normalised twin again.
    assert f'data-mask="{shown.pk}"' not in html
    assert f'class="case-figure manual-mask" data-mask="{manual.pk}"' in html
    # Readers never reach it.
    client.force_login(UserFactory(roles=["md"]))
    assert client.get(f"/cases/{radiograph.pk}/").status_code == 403
