"""Importing CXRs and manual masks: layouts, working resolution, re-import, dry run."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from annotation.models import Mask, Radiograph
from annotation.services.imports import ImportInputError, cxr_import, patient_key_for
from annotation.storage import blob_read
from cxrio.masks import mask_from_png, pixel_sha256, resize_nearest
from tests.annotation import cxrfiles
from tests.annotation.importing import rect_mask, state, stored_image, write_case
from tests.factories import DatasetFactory

pytestmark = pytest.mark.django_db

# QaTa-COV19 v2 as released: exact folder names, BIMCV subject names in both cases, covid_N.
V2 = {
    "Train Set": [
        ("sub-S09499_ses-E16332_run-1_bp-chest_vp-ap_dx.png", (96, 80)),
        ("sub-S09907_ses-E22937_acq-1_run-1_bp-chest_vp-pa_dx.png", (90, 84)),
        ("covid_1.png", (100, 76)),
    ],
    "Test Set": [
        ("sub-s09499_ses-e22280_run-1_bp-chest_vp-ap_dx.png", (88, 88)),
        ("covid_2779.png", (80, 100)),
    ],
}


@pytest.fixture
def qata_v2(tmp_path):
    root = tmp_path / "QaTa-COV19-v2"
    masks = {}
    for seed, (split, cases) in enumerate(V2.items()):
        for index, (name, size) in enumerate(cases):
            masks[name] = write_case(
                root / split, name, size=size, seed=seed * 10 + index, masks="Ground-truths"
            )
    return root, masks


def test_it_imports_the_qata_v2_layout_with_splits_masks_and_patients(qata_v2):
    root, masks = qata_v2
    dataset = DatasetFactory(mask_max_side=64)
    report = cxr_import(dataset=dataset, paths=[root])

    assert report.rejected == []
    assert len(report.imported) == 5 and len(report.masks_imported) == 5
    rows = {r.name: r for r in Radiograph.objects.filter(dataset=dataset)}
    assert set(rows) == {name for cases in V2.values() for name, _ in cases}
    splits = {name: rows[name].split for name in rows}
    assert splits["covid_1.png"] == "train" and splits["covid_2779.png"] == "test"
    assert splits["sub-s09499_ses-e22280_run-1_bp-chest_vp-ap_dx.png"] == "test"
    assert {r.label for r in rows.values()} == {"covid"}

    # One BIMCV subject, written sub-S09499 in one split and sub-s09499 in the other.
    first = rows["sub-S09499_ses-E16332_run-1_bp-chest_vp-ap_dx.png"].patient_key
    assert first == rows["sub-s09499_ses-e22280_run-1_bp-chest_vp-ap_dx.png"].patient_key
    assert first == patient_key_for("sub-s09499") and "09499" not in first
    assert first != rows["sub-S09907_ses-E22937_acq-1_run-1_bp-chest_vp-pa_dx.png"].patient_key
    assert rows["covid_1.png"].patient_key == ""

    for name, mask in masks.items():
        row = rows[name]
        assert max(row.work_width, row.work_height) == 64
        stored = Mask.objects.get(radiograph=row)
        assert stored.kind == "manual" and stored.source_name == f"mask_{name}"
        expected = resize_nearest(mask, width=row.work_width, height=row.work_height)
        pixels = mask_from_png(blob_read(stored.png.name))
        assert np.array_equal(pixels, expected)
        assert stored.area == expected.sum() and stored.pixel_sha256 == pixel_sha256(expected)
        assert (stored.width, stored.height) == (row.work_width, row.work_height)
        display = stored_image(row.display.name)
        assert display.shape == (row.height, row.width) and display.dtype == np.uint8


def test_reimport_changes_nothing(qata_v2):
    root, _ = qata_v2
    dataset = DatasetFactory()
    cxr_import(dataset=dataset, paths=[root])
    before = state()
    again = cxr_import(dataset=dataset, paths=[root])
    assert state() == before
    assert again.imported == [] and again.masks_imported == []
    assert len(again.duplicates) == 5 and len(again.mask_duplicates) == 5


def test_dry_run_changes_nothing_and_says_what_would_happen(qata_v2):
    root, _ = qata_v2
    dataset = DatasetFactory()
    before = state()
    report = cxr_import(dataset=dataset, paths=[root, root], dry_run=True)
    assert state() == before
    # The second copy of every file is recognised within the run.
    assert len(report.imported) == 5 and len(report.duplicates) == 5
    assert len(report.masks_imported) == 5 and report.dry_run


def test_the_same_content_in_two_folders_is_imported_once(qata_v2, tmp_path):
    root, _ = qata_v2
    dataset = DatasetFactory()
    report = cxr_import(dataset=dataset, paths=[root / "Train Set", root / "Train Set"])
    assert len(report.imported) == 3 and len(report.duplicates) == 3
    assert Radiograph.objects.count() == 3 and Mask.objects.count() == 3


def test_a_new_mask_for_a_known_image_is_added(tmp_path):
    dataset = DatasetFactory()
    write_case(tmp_path / "first", "a.png", size=(64, 64), seed=1, masks=None)
    cxr_import(dataset=dataset, paths=[tmp_path / "first"])
    write_case(tmp_path / "second", "a.png", size=(64, 64), seed=1, masks="Ground-truths")
    report = cxr_import(dataset=dataset, paths=[tmp_path / "second"])
    assert len(report.duplicates) == 1 and len(report.masks_imported) == 1
    assert Radiograph.objects.get().masks.count() == 1


def test_it_imports_the_qata_v1_layout_from_a_zip(tmp_path):
    folder = tmp_path / "v1"
    write_case(folder, "covid_7.png", size=(64, 48), seed=2, masks="Ground-truths")
    write_case(folder, "covid_8.png", size=(48, 64), seed=3, masks="Ground-truths")
    archive = tmp_path / "QaTa-COV19.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*.png")):
            zf.write(file, f"QaTa-COV19/{file.relative_to(folder).as_posix()}")
    report = cxr_import(dataset=DatasetFactory(), paths=[archive])
    assert report.rejected == []
    assert sorted(report.imported) == [
        "QaTa-COV19.zip:QaTa-COV19/Images/covid_7.png",
        "QaTa-COV19.zip:QaTa-COV19/Images/covid_8.png",
    ]
    assert Mask.objects.count() == 2 and set(
        Radiograph.objects.values_list("split", flat=True)
    ) == {""}


def test_labels_csv_sets_label_split_finding_and_patient(tmp_path):
    folder = tmp_path / "phantoms"
    folder.mkdir()
    for index, name in enumerate(("p1.png", "p2.png", "p3.png")):
        (folder / name).write_bytes(cxrfiles.png8(64 + index, 64))
    (folder / "labels.csv").write_text(
        "name,label,finding,patient_id,split\n"
        "p1.png,normal,,PAT-1,train\n"
        "p2.png,other,pleural effusion,PAT-1,test\n"
    )
    report = cxr_import(dataset=DatasetFactory(), paths=[folder], label="covid")
    assert report.rejected == [] and report.skipped == []
    rows = {r.name: r for r in Radiograph.objects.all()}
    assert (rows["p1.png"].label, rows["p1.png"].split) == ("normal", "train")
    assert rows["p2.png"].metadata["finding"] == "pleural effusion"
    assert rows["p1.png"].patient_key == rows["p2.png"].patient_key == patient_key_for("PAT-1")
    assert (rows["p3.png"].label, rows["p3.png"].patient_key) == ("covid", "")


def test_a_bad_labels_csv_imports_nothing_from_its_path(tmp_path):
    folder = tmp_path / "phantoms"
    folder.mkdir()
    (folder / "p1.png").write_bytes(cxrfiles.png8())
    (folder / "labels.csv").write_text("file,class\np1.png,covid\n")
    before = state()
    report = cxr_import(dataset=DatasetFactory(), paths=[folder])
    assert [(r.name, r.reason) for r in report.rejected] == [
        (
            "phantoms/labels.csv",
            "needs the columns name,label[,finding,patient_id,split]; "
            "nothing under this PATH was imported",
        )
    ]
    assert state()[1:] == before[1:]


def test_an_unknown_label_in_labels_csv_rejects_that_file(tmp_path):
    folder = tmp_path / "phantoms"
    folder.mkdir()
    (folder / "p1.png").write_bytes(cxrfiles.png8())
    (folder / "labels.csv").write_text("name,label\np1.png,pneumonia\n")
    report = cxr_import(dataset=DatasetFactory(), paths=[folder])
    assert report.rejected[0].name == "phantoms/p1.png"
    assert "labels.csv gives label 'pneumonia'" in report.rejected[0].reason
    assert Radiograph.objects.count() == 0


def test_the_stored_jpeg_display_is_upright(tmp_path):
    (tmp_path / "portrait.jpg").write_bytes(cxrfiles.jpeg_with_orientation(6))
    cxr_import(dataset=DatasetFactory(), paths=[tmp_path / "portrait.jpg"])
    row = Radiograph.objects.get()
    display = stored_image(row.display.name)
    assert (row.width, row.height, row.source_format) == (48, 96, "jpeg")
    assert display.shape == (96, 48)
    assert display[:20, -12:].mean() > 200 and display[:20, :12].mean() < 100
    assert row.original.name.endswith(".jpg")
    assert blob_read(row.original.name) == (tmp_path / "portrait.jpg").read_bytes()


def test_png_variants_import_with_their_bit_depth(tmp_path):
    from PIL import Image

    grey = cxrfiles.grey8(64, 64)
    (tmp_path / "deep.png").write_bytes(cxrfiles.png16(64, 64))
    palette = Image.fromarray(grey).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    (tmp_path / "palette.png").write_bytes(cxrfiles.png_bytes(palette))
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    (tmp_path / "rgba.png").write_bytes(cxrfiles.png_bytes(Image.fromarray(rgba, "RGBA")))
    report = cxr_import(dataset=DatasetFactory(), paths=[tmp_path])
    assert report.rejected == []
    rows = {r.name: r for r in Radiograph.objects.all()}
    # 16 palette entries are stored in 4 bits a pixel.
    assert rows["deep.png"].bit_depth == 16 and rows["palette.png"].bit_depth == 4
    assert rows["deep.png"].metadata["window"]["method"] == "min-max"
    assert np.array_equal(stored_image(rows["rgba.png"].display.name), grey)
    assert cxrfiles.lungs_darker(stored_image(rows["deep.png"].display.name))


def test_progress_is_reported_per_case(qata_v2):
    root, _ = qata_v2
    calls = []
    cxr_import(
        dataset=DatasetFactory(),
        paths=[root],
        progress=lambda done, total, where: calls.append((done, total)),
    )
    assert calls == [(n, 5) for n in range(1, 6)]


def test_a_missing_path_stops_the_import_before_anything(tmp_path):
    (tmp_path / "a.png").write_bytes(cxrfiles.png8())
    with pytest.raises(ImportInputError, match="not found: .*nowhere"):
        cxr_import(dataset=DatasetFactory(), paths=[tmp_path, tmp_path / "nowhere"])
    assert Radiograph.objects.count() == 0


def test_masks_are_checked_against_a_known_image_on_reimport(tmp_path):
    dataset = DatasetFactory()
    write_case(tmp_path / "one", "a.png", size=(64, 64), seed=1, masks=None)
    cxr_import(dataset=dataset, paths=[tmp_path / "one"])
    (tmp_path / "two" / "Images").mkdir(parents=True)
    (tmp_path / "two" / "Images" / "a.png").write_bytes(
        (tmp_path / "one/Images/a.png").read_bytes()
    )
    (tmp_path / "two" / "Ground-truths").mkdir()
    (tmp_path / "two/Ground-truths/mask_a.png").write_bytes(cxrfiles.mask_png(rect_mask(32, 32, 1)))
    before = state()
    report = cxr_import(dataset=dataset, paths=[tmp_path / "two"])
    assert report.rejected[0].name == "two/Ground-truths/mask_a.png"
    assert report.rejected[0].reason == "mask is 32×32 but the image is 64×64"
    assert state() == before


def test_phantom_cohorts_import_with_their_labels_and_without_the_hidden_truth(tmp_path):
    from mlworker.phantoms import generate_cohort, write_qata_layout

    cases = generate_cohort(seed=1, n_covid=4, n_control=2, size=64)
    write_qata_layout(cases, tmp_path / "phantoms")
    report = cxr_import(dataset=DatasetFactory(), paths=[tmp_path / "phantoms"], label="other")

    assert report.rejected == []
    assert len(report.imported) == len(cases)  # hidden-truth/ masks are not radiographs
    assert any(name.endswith("phantoms.json") for name in report.skipped)
    rows = {r.name: r for r in Radiograph.objects.all()}
    for case in cases:
        row = rows[f"{case.name}.png"]
        assert row.label == case.label  # from labels.csv, not --label
        assert row.patient_key == patient_key_for(case.patient_id)
        assert row.masks.exists() == case.has_manual
        if case.finding:
            assert row.metadata["finding"] == case.finding


def test_the_same_pixels_are_one_stored_blob_whether_imported_or_drawn(qata_v2):
    from django.core.files.storage import default_storage

    from annotation.services.candidates import mask_create

    root, _ = qata_v2
    dataset = DatasetFactory(mask_max_side=64)
    cxr_import(dataset=dataset, paths=[root])
    imported = Mask.objects.filter(radiograph__dataset=dataset).first()
    pixels = mask_from_png(blob_read(imported.png.name))
    folder = imported.png.name.rsplit("/", 1)[0]
    before = len(default_storage.listdir(folder)[1])
    # An MD draws exactly the imported outline (or a network reproduces it).
    drawn = mask_create(radiograph=imported.radiograph, pixels=pixels, kind="drawn")
    assert drawn.png.name == imported.png.name
    assert len(default_storage.listdir(folder)[1]) == before
    assert np.array_equal(mask_from_png(blob_read(drawn.png.name)), pixels)
