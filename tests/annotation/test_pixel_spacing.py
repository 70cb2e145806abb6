"""Pixel spacing: read from a DICOM at import, given at the mask working resolution, shown on the
draw screen (where the brush size is then in mm) and nowhere it could tell candidates apart."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from annotation.models import Radiograph, ReviewTask
from annotation.roles import MD
from annotation.services.imports import cxr_import
from tests.annotation import cxrfiles
from tests.factories import PASSWORD, DatasetFactory, UserFactory, review_stage

pytestmark = pytest.mark.django_db


def _import_one(tmp_path, ds, *, max_side: int) -> Radiograph:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "case.dcm").write_bytes(cxrfiles.dicom_bytes(ds))
    report = cxr_import(dataset=DatasetFactory(mask_max_side=max_side), paths=[tmp_path / "in"])
    assert report.rejected == [] and len(report.imported) == 1
    return Radiograph.objects.get()


def test_pixel_spacing_of_a_dicom_is_given_at_the_working_resolution(tmp_path):
    ds, _ = cxrfiles.mono2_12bit(height=120, width=100)
    ds.PixelSpacing = [0.2, 0.15]  # row spacing, column spacing (mm)
    radiograph = _import_one(tmp_path, ds, max_side=50)
    # 100 x 120 pixels are worked on at 42 x 50: each working pixel covers more film
    assert (radiograph.work_width, radiograph.work_height) == (42, 50)
    row, col = radiograph.work_pixel_spacing_mm
    assert row == pytest.approx(0.2 * 120 / 50)
    assert col == pytest.approx(0.15 * 100 / 42)


def test_imager_pixel_spacing_counts_when_pixel_spacing_is_absent(tmp_path):
    ds, _ = cxrfiles.mono2_12bit(height=64, width=64)
    ds.ImagerPixelSpacing = [0.139, 0.139]
    radiograph = _import_one(tmp_path, ds, max_side=1024)
    assert radiograph.work_pixel_spacing_mm == pytest.approx((0.139, 0.139))


def test_no_spacing_without_one_in_the_file(tmp_path):
    ds, _ = cxrfiles.mono2_12bit(height=64, width=64)
    assert _import_one(tmp_path, ds, max_side=1024).work_pixel_spacing_mm is None


@pytest.mark.parametrize(
    "value", [None, [], [0, 0.2], ["x", 1], [-0.1, -0.1], "0.2 mm", [float("nan")], [float("inf")]]
)
def test_unusable_spacing_is_none(value):
    radiograph = Radiograph(width=10, height=10, work_width=10, work_height=10)
    radiograph.metadata = {"pixel_spacing_mm": value}
    assert radiograph.work_pixel_spacing_mm is None


def test_the_draw_screen_carries_the_spacing_and_the_choice_screen_does_not(client):
    stage = review_stage(n_cases=1, width=64, height=48)
    md = UserFactory(roles=[MD])
    client.login(username=md.username, password=PASSWORD)
    choose = client.get(client.get(reverse("review_next", kwargs={"stage_id": stage.pk})).url)
    task = ReviewTask.objects.get(reader=md)
    task.radiograph.metadata = {"pixel_spacing_mm": [0.3, 0.25]}
    task.radiograph.save(update_fields=["metadata"])
    draw = client.get(reverse("review_draw", kwargs={"token": task.token})).content.decode()
    assert re.search(r'data-pixel-spacing-mm="0\.3 0\.25"', draw)
    assert "data-cm-display-tools" in choose.content.decode()
    assert "data-pixel-spacing-mm" not in choose.content.decode()
