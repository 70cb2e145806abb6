"""Bad input is reported per file, with a reason, and leaves nothing in the DB or in storage."""

from __future__ import annotations

import pytest
from django.db import DatabaseError

from annotation.models import Mask, Radiograph
from annotation.services import imports
from annotation.services.imports import cxr_import
from annotation.storage import stored_paths
from tests.annotation import badfiles, cxrfiles
from tests.annotation.importing import state, write_case
from tests.factories import DatasetFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def corpus(tmp_path, settings):
    settings.IMPORT_MAX_FILE_BYTES = badfiles.MAX_FILE_BYTES
    settings.IMPORT_MAX_PIXELS = badfiles.MAX_PIXELS
    return badfiles.bad_corpus(tmp_path / "corpus")


def _check_every_bad_file_is_explained(report, corpus):
    reasons = {r.name: r.reason for r in report.rejected}
    for name, fragment in corpus.expected.items():
        assert name in reasons, f"{name} was not reported"
        assert fragment in reasons[name], f"{name}: {reasons[name]!r}"
    assert set(reasons) == set(corpus.expected)
    assert report.imported == [] and report.masks_imported == []


def test_every_bad_file_is_reported_and_nothing_is_written(corpus):
    before = state()
    report = cxr_import(dataset=DatasetFactory(), paths=corpus.paths)
    _check_every_bad_file_is_explained(report, corpus)
    assert state()[1:] == before[1:]
    assert stored_paths() == []


def test_bad_files_leave_an_existing_dataset_as_it_was(corpus, tmp_path):
    dataset = DatasetFactory()
    write_case(tmp_path / "good", "covid_1.png", size=(64, 64), seed=1, masks="Ground-truths")
    cxr_import(dataset=dataset, paths=[tmp_path / "good"])
    before = state()
    assert before[1:3] == (1, 1)
    report = cxr_import(dataset=dataset, paths=[*corpus.paths, tmp_path / "good"])
    _check_every_bad_file_is_explained(report, corpus)
    assert len(report.duplicates) == 1
    assert state() == before


def test_a_dry_run_finds_the_same_problems(corpus):
    report = cxr_import(dataset=DatasetFactory(), paths=corpus.paths, dry_run=True)
    _check_every_bad_file_is_explained(report, corpus)
    assert stored_paths() == []


def test_a_failed_transaction_removes_the_blobs_it_wrote(tmp_path, monkeypatch):
    write_case(tmp_path / "in", "covid_1.png", size=(64, 64), seed=1, masks="Ground-truths")

    def broken(*args, **kwargs):
        raise DatabaseError("connection lost")

    monkeypatch.setattr(Mask.objects, "get_or_create", broken)
    dataset = DatasetFactory()
    with pytest.raises(DatabaseError):
        cxr_import(dataset=dataset, paths=[tmp_path / "in"])
    assert Radiograph.objects.count() == 0
    assert stored_paths() == []


def test_a_failed_case_keeps_blobs_that_other_rows_use(tmp_path, monkeypatch):
    write_case(tmp_path / "in", "covid_1.png", size=(64, 64), seed=1, masks=None)
    cxr_import(dataset=DatasetFactory(), paths=[tmp_path / "in"])
    shared = stored_paths()
    write_case(tmp_path / "in", "covid_1.png", size=(64, 64), seed=1, masks="Ground-truths")

    def broken(*args, **kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(Mask.objects, "get_or_create", broken)
    with pytest.raises(DatabaseError):
        cxr_import(dataset=DatasetFactory(), paths=[tmp_path / "in"])
    # The other dataset's original and display stay; the new mask blob is gone.
    assert stored_paths() == shared
    assert Radiograph.objects.count() == 1 and Mask.objects.count() == 0


def test_a_concurrent_import_of_the_same_file_ends_as_a_duplicate(tmp_path, monkeypatch):
    write_case(tmp_path / "in", "covid_1.png", size=(64, 64), seed=1, masks="Ground-truths")
    dataset = DatasetFactory()
    prepare = imports._Importer.prepare
    raced = []

    def prepare_then_lose_the_race(self, case):
        prepared = prepare(self, case)
        if not raced:  # another worker imports the same case between our checks and our write
            raced.append(True)
            cxr_import(dataset=dataset, paths=[tmp_path / "in"])
        return prepared

    monkeypatch.setattr(imports._Importer, "prepare", prepare_then_lose_the_race)
    report = cxr_import(dataset=dataset, paths=[tmp_path / "in"])
    assert report.imported == [] and len(report.duplicates) == 1
    assert report.masks_imported == [] and len(report.mask_duplicates) == 1
    assert Radiograph.objects.count() == 1 and Mask.objects.count() == 1
    assert len(stored_paths()) == 3


def test_only_the_bad_case_is_rejected_among_good_ones(tmp_path, settings):
    folder = tmp_path / "mixed"
    write_case(folder, "covid_1.png", size=(64, 64), seed=1, masks="Ground-truths")
    write_case(folder, "covid_2.png", size=(66, 64), seed=2, masks="Ground-truths")
    (folder / "Ground-truths" / "mask_covid_2.png").write_bytes(cxrfiles.png8(66, 64))
    report = cxr_import(dataset=DatasetFactory(), paths=[folder])
    assert report.imported == ["mixed/Images/covid_1.png"]
    assert [r.name for r in report.rejected] == ["mixed/Ground-truths/mask_covid_2.png"]
    assert report.rejected[0].reason.startswith("mask is not binary: values ")
    assert len(stored_paths()) == 3  # covid_1's original, display and mask only
