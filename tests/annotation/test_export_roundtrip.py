"""An export imported with import_cxr into a fresh dataset gives the same pixels and masks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from annotation.models import Dataset, GroundTruth
from annotation.services.exports import export_build, export_request
from annotation.storage import blob_read
from cxrio.masks import mask_from_png
from tests.annotation.exporting import CASES, full_size, import_dataset, write_files

pytestmark = pytest.mark.django_db


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob_read(path))))


@pytest.mark.parametrize("split", ["none", "stored"])
def test_an_export_imports_back_with_the_same_pixels_masks_labels_and_splits(tmp_path, split):
    splits = {n: ("train" if i % 2 else "test") for i, n in enumerate(CASES)}
    source = import_dataset(write_files(tmp_path / "src", CASES, splits=splits), max_side=32)
    for radiograph in source.radiographs.filter(label="covid"):
        GroundTruth.objects.create(
            radiograph=radiograph, mask=radiograph.masks.get(), source="manual", method="imported"
        )
    export = export_request(
        dataset=source, created_by=None, include_controls=True, split=split, enqueue=False
    )
    export_build(export=export)
    zip_path = tmp_path / "export.zip"
    zip_path.write_bytes(blob_read(export.file.name))

    # The full-size 0/255 masks come back at the working resolution of the new dataset.
    out = io.StringIO()
    call_command("import_cxr", str(zip_path), dataset="again", create_dataset=True,
                 mask_max_side=32, stdout=out, stderr=io.StringIO())  # fmt: skip
    # The manifests, card and checksums are skipped as documents; nothing is refused.
    assert "Rejected files:" not in out.getvalue(), out.getvalue()
    again = Dataset.objects.get(name="again")

    before = {r.name: r for r in source.radiographs.all()}
    after = {r.name: r for r in again.radiographs.all()}
    assert set(after) == set(before)  # all names end in .png already
    for name, old in before.items():
        new = after[name]
        np.testing.assert_array_equal(pixels(new.display.name), pixels(old.display.name))
        assert (new.label, new.split) == (old.label, old.split)
        assert (new.work_width, new.work_height) == (old.work_width, old.work_height)
        old_mask = old.ground_truth.mask if hasattr(old, "ground_truth") else None
        new_masks = list(new.masks.all())
        if old_mask is None:  # a control: its empty mask comes back empty
            assert [m.area for m in new_masks] == [0]
            continue
        assert len(new_masks) == 1
        np.testing.assert_array_equal(
            mask_from_png(blob_read(new_masks[0].png.name)),
            mask_from_png(blob_read(old_mask.png.name)),
        )
        assert new_masks[0].pixel_sha256 == old_mask.pixel_sha256
    # Patients stay grouped: one patient's cases share one key after the round trip too.
    assert after["a.png"].patient_key == after["d.png"].patient_key != after["b.png"].patient_key


def test_upscaled_masks_come_back_exactly_at_the_working_resolution(tmp_path):
    """Nearest upscaling then nearest downscaling returns every working pixel."""
    source = import_dataset(write_files(tmp_path / "src", CASES), max_side=32)
    for radiograph in source.radiographs.filter(label="covid"):
        work = mask_from_png(blob_read(radiograph.masks.get().png.name))
        from cxrio.masks import resize_nearest

        back = resize_nearest(
            full_size(radiograph, work), width=radiograph.work_width, height=radiograph.work_height
        )
        np.testing.assert_array_equal(back, work)
