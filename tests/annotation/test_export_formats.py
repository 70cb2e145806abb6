"""What an export holds: the QaTa-COV19 layout file by file, COCO decoded with pycocotools,
the manifests with provenance, the dataset card and SHA256SUMS."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from annotation.services.exports import export_build, export_request
from annotation.storage import blob_read
from tests.annotation.exporting import full_size, provenance_scenario, read_zip, zip_csv

pytestmark = pytest.mark.django_db


@pytest.fixture
def scenario(tmp_path):
    return provenance_scenario(tmp_path)


def build(scenario, **options):
    export = export_request(
        dataset=scenario.dataset, created_by=scenario.users["md1"], enqueue=False, **options
    )
    export_build(export=export)
    export.refresh_from_db()
    return export, read_zip(blob_read(export.file.name))


def png_array(data: bytes) -> tuple[np.ndarray, str]:
    image = Image.open(io.BytesIO(data))
    return np.asarray(image), image.mode


def test_the_qata_layout_holds_exactly_the_accepted_cases_file_by_file(scenario):
    export, archive = build(scenario, formats=["qata"])

    accepted = ["a.png", "b.png", "c.png", "d.png"]
    images = {f"Images/{n}" for n in accepted}
    masks = {f"Ground-truths/mask_{n}" for n in accepted}
    assert set(archive.namelist()) == images | masks | {
        "labels.csv",
        "audit.jsonl",
        "README.md",
        "SHA256SUMS",
    }
    assert export.n_cases == 4
    for name in accepted:
        radiograph = scenario.cases[name]
        image = archive.read(f"Images/{name}")
        assert image == blob_read(radiograph.display.name)  # the stored display PNG, as is
        pixels, mode = png_array(archive.read(f"Ground-truths/mask_{name}"))
        assert mode == "L" and pixels.dtype == np.uint8
        assert pixels.shape == (radiograph.height, radiograph.width)
        assert set(np.unique(pixels)) <= {0, 255}
        expected = full_size(radiograph, scenario.truths[name])
        np.testing.assert_array_equal(pixels == 255, expected)
    # PNGs are stored, not deflated again; text is compressed.
    assert archive.getinfo("Images/a.png").compress_type == 0
    assert archive.getinfo("README.md").compress_type == 8


def test_controls_come_with_empty_masks_and_cases_without_a_mask_stay_out(scenario):
    _, archive = build(scenario, formats=["qata"], include_controls=True)

    pixels, _ = png_array(archive.read("Ground-truths/mask_e.png"))
    e = scenario.cases["e.png"]
    assert pixels.shape == (e.height, e.width) and not pixels.any()
    assert "Images/f.png" not in archive.namelist()


def test_stages_choose_which_accepted_masks_are_exported(scenario):
    _, archive = build(scenario, stages=[2], include_imported=False, formats=["qata"])
    assert {n for n in archive.namelist() if n.startswith("Images/")} == {
        "Images/b.png",
        "Images/c.png",
    }


def test_sha256sums_checks_every_other_file(scenario):
    _, archive = build(scenario, include_controls=True)
    lines = archive.read("SHA256SUMS").decode().splitlines()
    listed = {line[66:]: line[:64] for line in lines}
    assert set(listed) == set(archive.namelist()) - {"SHA256SUMS"}
    for name, digest in listed.items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest, name


# pycocotools 2.0 calls np.array(copy=False) the NumPy 1 way; harmless here.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_coco_file_decodes_with_pycocotools_pixel_for_pixel(scenario, tmp_path):
    _, archive = build(scenario, formats=["qata", "coco"], include_controls=True)
    path = tmp_path / "instances.json"
    path.write_bytes(archive.read("annotations/instances.json"))
    coco = COCO(str(path))

    by_file = {img["file_name"]: img for img in coco.dataset["images"]}
    assert set(by_file) == {f"Images/{n}" for n in ("a.png", "b.png", "c.png", "d.png", "e.png")}
    assert [c["name"] for c in coco.dataset["categories"]] == ["infection"]
    for file_name, image in by_file.items():
        radiograph = scenario.cases[file_name.split("/")[1]]
        assert (image["width"], image["height"]) == (radiograph.width, radiograph.height)
        decoded = np.zeros((radiograph.height, radiograph.width), dtype=bool)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])):
            decoded |= coco.annToMask(annotation).astype(bool)
        qata, _ = png_array(archive.read(file_name.replace("Images/", "Ground-truths/mask_")))
        np.testing.assert_array_equal(decoded, qata == 255)
    assert coco.getAnnIds(imgIds=[by_file["Images/e.png"]["id"]]) == []  # the control


def test_the_manifest_tells_each_cases_provenance_honestly(scenario):
    _, archive = build(scenario, include_controls=True)
    records = {r["image"]: r for r in json.loads(archive.read("manifest.json"))}
    rows = {r["image"]: r for r in zip_csv(archive, "manifest.csv")}
    assert set(records) == set(rows) == {f"Images/{n}" for n in "abcde" for n in [f"{n}.png"]}
    md1, md2, senior = (f"reader-{scenario.users[u].pk}" for u in ("md1", "md2", "senior"))

    for image, record in records.items():
        assert hashlib.sha256(archive.read(image)).hexdigest() == record["image_sha256"]
        assert hashlib.sha256(archive.read(record["mask"])).hexdigest() == record["mask_sha256"]
        assert rows[image]["image_sha256"] == record["image_sha256"]
        assert record["original_sha256"] == scenario.cases[image[7:]].sha256

    a = records["Images/a.png"]
    assert a["provenance"] == "manual" and a["ground_truth"]["stage"] == 1
    assert a["ground_truth"]["readers"] == [md1]
    assert [(d["reader"], d["outcome"], d["accepted"]) for d in a["decisions"]] == [
        (md1, "chose", True)
    ]

    b = records["Images/b.png"]
    assert b["provenance"] == "network" and b["ground_truth"]["method"] == "majority"
    assert [(v["arch"], v["encoder"]) for v in b["ground_truth"]["model_versions"]] == [
        ("unet", "densenet121")
    ]
    assert sorted(d["reader"] for d in b["decisions"]) == sorted([md1, md2])
    assert rows["Images/b.png"]["model_versions"].startswith("unet/densenet121#")

    c = records["Images/c.png"]
    assert c["provenance"] == "drawn" and c["ground_truth"]["agreement"] == 0.5
    assert [(d["reader"], d["task"], d["outcome"], d["accepted"]) for d in c["decisions"]] == [
        (md1, "review", "chose", False),
        (md2, "review", "drew", True),
        (senior, "adjudication", "drew", True),
    ]
    assert c["decisions"][0]["chosen_mask"]["kind"] == "network"
    assert rows["Images/c.png"]["n_decisions"] == "3"

    d = records["Images/d.png"]  # imported as final: nothing is made up
    assert d["ground_truth"]["method"] == "imported" and d["ground_truth"]["stage"] is None
    assert d["ground_truth"]["readers"] == [] and d["decisions"] == []
    assert "no readers" in d["notes"] and rows["Images/d.png"]["readers"] == ""

    e = records["Images/e.png"]
    assert e["provenance"] == "control" and e["ground_truth"] is None and e["mask_area"] == 0


def test_the_dataset_card_counts_cases_and_explains_each_stage(scenario):
    _, archive = build(scenario, include_controls=True, licence="CC BY 4.0", citation="Us, 2026")
    card = archive.read("README.md").decode()
    assert "| all | 5 |" in card and "| controls (empty mask) | 1 |" in card
    assert "### Stage 1" in card and "pairwise knockout" in card
    assert "### Stage 2" in card and "adjudicated: 1" in card and "majority: 1" in card
    assert "mean agreement 0.75" in card  # (1.0 + 0.5) / 2 in stage 2
    assert "### Imported as final" in card and "No readers" in card
    assert "unet/densenet121" in card
    assert "CC BY 4.0" in card and "Us, 2026" in card and "Degerli" in card
    assert "DICOM originals are not part of this export" in card


def test_stored_splits_give_train_and_test_folders(tmp_path):
    from tests.annotation.exporting import CASES, import_dataset, write_files

    cases = {k: v for k, v in CASES.items() if v[2] == "covid"}
    splits = {"a.png": "train", "b.png": "train", "c.png": "test", "d.png": "test", "f.png": "test"}
    dataset = import_dataset(write_files(tmp_path / "src", cases, splits=splits))
    from annotation.models import GroundTruth

    for radiograph in dataset.radiographs.all():
        GroundTruth.objects.create(
            radiograph=radiograph,
            mask=radiograph.masks.get(),
            source="manual",
            method="imported",
        )
    export = export_request(dataset=dataset, created_by=None, split="stored", enqueue=False)
    export_build(export=export)
    archive = read_zip(blob_read(export.file.name))
    names = set(archive.namelist())
    assert "Train Set/Images/a.png" in names and "Train Set/Ground-truths/mask_b.png" in names
    assert "Test Set/Images/c.png" in names and "Test Set/Ground-truths/mask_f.png" in names
    assert not any(n.startswith("Images/") for n in names)
