"""Importing DICOM and real CXRs: windowing, inversion, compression, and no patient data kept."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
from django.core import serializers
from pydicom.uid import JPEG2000Lossless, RLELossless

from annotation.models import Dataset, Mask, Radiograph
from annotation.services.imports import cxr_import, patient_key_for
from annotation.storage import blob_read, stored_paths
from cxrio.masks import mask_from_png
from tests.annotation import cxrfiles
from tests.annotation.importing import state, stored_image
from tests.factories import DatasetFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dicom_folder(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    mono1, _ = cxrfiles.mono1_16bit()
    (folder / "mono1.dcm").write_bytes(cxrfiles.dicom_bytes(mono1))
    mono2, stored = cxrfiles.mono2_12bit(90, 72)
    (folder / "IM0002").write_bytes(cxrfiles.dicom_bytes(mono2, preamble=False))  # no suffix
    rle, stored = cxrfiles.mono2_12bit(80, 80)
    rle.compress(RLELossless, stored)
    (folder / "rle.dcm").write_bytes(cxrfiles.dicom_bytes(rle))
    j2k, stored = cxrfiles.mono2_12bit(70, 90)
    j2k.compress(JPEG2000Lossless, stored)
    (folder / "j2k.dcm").write_bytes(cxrfiles.dicom_bytes(j2k))
    jpeg = cxrfiles.jpeg_baseline_dicom(cxrfiles.grey8(64, 80))
    (folder / "jpeg.dcm").write_bytes(cxrfiles.dicom_bytes(jpeg))
    return folder


def _by_file(folder) -> dict[str, Radiograph]:
    """The imported rows by the file they came from (their names are pseudonyms)."""
    return {
        path.name: Radiograph.objects.get(sha256=hashlib.sha256(path.read_bytes()).hexdigest())
        for path in folder.iterdir()
    }


def test_generated_dicoms_import_with_their_facts(dicom_folder):
    report = cxr_import(dataset=DatasetFactory(), paths=[dicom_folder])
    assert report.rejected == [] and len(report.imported) == 5
    rows = _by_file(dicom_folder)
    assert {r.source_format for r in rows.values()} == {"dicom"}
    assert (rows["mono1.dcm"].bit_depth, rows["IM0002"].bit_depth) == (16, 12)
    facts = rows["mono1.dcm"].metadata
    assert facts["photometric_interpretation"] == "MONOCHROME1" and facts["inverted"] is True
    assert facts["window"] == {"method": "window", "center": 40000.0, "width": 30000.0,
                               "function": "LINEAR"}  # fmt: skip
    assert (facts["modality"], facts["view_position"]) == ("CR", "PA")
    assert rows["rle.dcm"].metadata["transfer_syntax"] == "RLE Lossless"
    assert (
        rows["j2k.dcm"].metadata["transfer_syntax"] == "JPEG 2000 Image Compression (Lossless Only)"
    )
    for row in rows.values():
        display = stored_image(row.display.name)
        assert display.shape == (row.height, row.width)
        assert cxrfiles.lungs_darker(display), row.name
        assert row.original.name.endswith(".dcm")


def test_dicom_files_are_kept_shown_and_exported_under_a_pseudonym(dicom_folder):
    from rest_framework.test import APIClient

    from annotation.services.exports.qata import Namer
    from tests.factories import UserFactory

    uid_named = dicom_folder / "1.2.826.0.1.3680043.8.498.10034.dcm"
    (dicom_folder / "mono1.dcm").rename(uid_named)
    cxr_import(dataset=DatasetFactory(), paths=[dicom_folder])
    row = _by_file(dicom_folder)[uid_named.name]
    assert re.fullmatch(r"cxr-[0-9a-f]{16}\.dcm", row.name)
    assert "1.2.826" not in row.original.name and "1.2.826" not in row.display.name
    client = APIClient()
    client.force_authenticate(UserFactory(roles=["researcher"]))
    shown = client.get(f"/api/radiographs/{row.pk}/").json()
    assert shown["name"] == row.name
    assert "1.2.826" not in json.dumps(client.get("/api/radiographs/").json())
    assert Namer().name_for(row) == f"{row.name[:-4]}.png"


def test_dicom_patient_identifiers_and_dates_never_reach_db_or_storage(dicom_folder):
    cxr_import(dataset=DatasetFactory(), paths=[dicom_folder])
    stored = b"".join(blob_read(path) for path in stored_paths())
    rows = serializers.serialize(
        "json", [*Dataset.objects.all(), *Radiograph.objects.all(), *Mask.objects.all()]
    )
    for text in cxrfiles.PHI:
        assert text.encode() in (dicom_folder / "mono1.dcm").read_bytes()
        assert text.encode() not in stored, text
        assert text not in rows, text
    # The same patient in every file: one key, derived from PatientID with the salt.
    keys = set(Radiograph.objects.values_list("patient_key", flat=True))
    assert keys == {patient_key_for(cxrfiles.PATIENT_ID)}


def test_a_stored_dicom_decodes_to_the_stored_display(dicom_folder):
    from cxrio.images import decode_image

    cxr_import(dataset=DatasetFactory(), paths=[dicom_folder / "mono1.dcm"])
    row = Radiograph.objects.get()
    again = decode_image(blob_read(row.original.name), max_pixels=10**7)
    assert np.array_equal(again.display, stored_image(row.display.name))


def test_dicom_reimport_and_dry_run_change_nothing(dicom_folder):
    dataset = DatasetFactory()
    cxr_import(dataset=dataset, paths=[dicom_folder])
    before = state()
    assert len(cxr_import(dataset=dataset, paths=[dicom_folder]).duplicates) == 5
    dry = cxr_import(dataset=DatasetFactory(), paths=[dicom_folder], dry_run=True)
    assert len(dry.imported) == 5
    assert state()[1:] == before[1:]


def test_real_qata_pairs_and_dicoms_import(shared_data, tmp_path):
    real = shared_data / "real-cxr"
    dataset = DatasetFactory(mask_max_side=128)
    report = cxr_import(
        dataset=dataset,
        paths=[
            real / "qata-cov19-sgseg",
            real / "nih-cxr14-dicom-nhsx",
            real / "dwv-gdcm-cr-chest-dicom" / "gdcm-CR-MONO1-10-chest.dcm",
        ],
    )
    assert report.rejected == []
    assert len(report.imported) == 32 and len(report.masks_imported) == 30

    pairs = sorted((real / "qata-cov19-sgseg").glob("*/masks/mask_*.png"))
    assert len(pairs) == 30
    for mask_file in pairs[::7]:
        row = Radiograph.objects.get(dataset=dataset, name=mask_file.name[len("mask_") :])
        assert (row.width, row.height, row.work_width, row.work_height) == (224, 224, 128, 128)
        mask = Mask.objects.get(radiograph=row)
        full = stored_image(row.display.name)
        assert full.shape == (224, 224)
        # The stored mask covers the same share of the image as the file, within resampling.
        from PIL import Image

        source = np.asarray(Image.open(mask_file)) > 127
        stored = mask_from_png(blob_read(mask.png.name))
        assert abs(stored.mean() - source.mean()) < 0.01

    # sub-S… and sub-s… spellings of one subject share a key; covid_N have none.
    keys = dict(Radiograph.objects.filter(dataset=dataset).values_list("name", "patient_key"))
    assert keys["covid_1.png"] == ""
    assert keys["sub-S09499_ses-E22280_run-1_bp-chest_vp-ap_dx.png"] == patient_key_for(
        "sub-s09499"
    )
    assert keys["sub-s09499_ses-e16332_run-1_bp-chest_vp-ap_dx.png"] == patient_key_for(
        "sub-s09499"
    )

    # Kept under a pseudonym, not the instance UID it was named after.
    assert not Radiograph.objects.filter(name__startswith="1.3.6.1.4.1.11129").exists()
    nih = Radiograph.objects.get(dataset=dataset, patient_key=patient_key_for("Covid0000"))
    assert nih.patient_key == patient_key_for("Covid0000")
    assert b"Covid0000" not in blob_read(nih.original.name)

    cr_file = real / "dwv-gdcm-cr-chest-dicom" / "gdcm-CR-MONO1-10-chest.dcm"
    cr = Radiograph.objects.get(sha256=hashlib.sha256(cr_file.read_bytes()).hexdigest())
    assert (cr.bit_depth, cr.metadata["photometric_interpretation"]) == (10, "MONOCHROME1")
    display = stored_image(cr.display.name)
    rows = slice(440 // 3, 2 * 440 // 3)
    lungs = np.r_[display[rows, 88:176].ravel(), display[rows, 264:352].ravel()]
    mediastinum = display[rows, 198:242]
    assert lungs.mean() + 40 < mediastinum.mean()  # bright bones and heart, dark lungs
    assert b"1993.02.24" not in blob_read(cr.original.name)  # acquisition date dropped

    # A QaTa v2 tree built from the same real files: the split comes from the folder.
    v2 = tmp_path / "QaTa-COV19"
    for split, part in (("Train Set", "train"), ("Test Set", "test")):
        source = real / "qata-cov19-sgseg" / part
        shutil.copytree(source / "images", v2 / split / "Images")
        shutil.copytree(source / "masks", v2 / split / "Ground-truths")
    other = DatasetFactory(mask_max_side=128)
    report = cxr_import(dataset=other, paths=[v2])
    assert report.rejected == [] and len(report.masks_imported) == 30
    splits = dict(Radiograph.objects.filter(dataset=other).values_list("name", "split"))
    assert splits["covid_1.png"] == "train"
    assert splits["sub-S09499_ses-E22280_run-1_bp-chest_vp-ap_dx.png"] == "test"
    # Same files, other dataset: blobs are shared, not written twice.
    assert len(stored_paths()) == 32 * 2 + 30
