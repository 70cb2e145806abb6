"""Export choices, k-fold split files, file names, immutability and cancellation."""

from __future__ import annotations

from collections import defaultdict

import pytest

from annotation.models import Export, GroundTruth, Job
from annotation.services.exports import (
    ExportCancelled,
    ExportError,
    export_build,
    export_request,
)
from annotation.storage import blob_read, stored_paths
from tests.annotation.exporting import (
    CASES,
    import_dataset,
    provenance_scenario,
    read_zip,
    write_files,
    zip_csv,
)

pytestmark = pytest.mark.django_db


def accept_all(dataset) -> None:
    for radiograph in dataset.radiographs.filter(label="covid"):
        GroundTruth.objects.create(
            radiograph=radiograph, mask=radiograph.masks.get(), source="manual", method="imported"
        )


@pytest.fixture
def cohort(tmp_path):
    """16 cases of 8 patients (two each), 10 COVID-19 and 6 controls, all different images."""
    cases = {}
    for i in range(16):
        label = "covid" if i % 8 < 5 else "normal"
        cases[f"case-{i:02d}.png"] = (30 + i, 40 + i % 3, label, f"P{i // 2}")
    dataset = import_dataset(write_files(tmp_path / "cohort", cases))
    accept_all(dataset)
    return dataset


def test_kfold_files_keep_each_patient_in_one_fold_and_every_label_in_every_fold(cohort):
    export = export_request(
        dataset=cohort, created_by=None, include_controls=True, split="kfold", folds=3,
        seed=11, enqueue=False,
    )  # fmt: skip
    export_build(export=export)
    archive = read_zip(blob_read(export.file.name))
    rows = zip_csv(archive, "splits/folds.csv")
    assert len(rows) == 16 and {r["fold"] for r in rows} == {"1", "2", "3"}

    folds_of_patient = defaultdict(set)
    labels_of_fold = defaultdict(set)
    for row in rows:
        folds_of_patient[row["patient_key"]].add(row["fold"])
        labels_of_fold[row["fold"]].add(row["label"])
    assert all(len(folds) == 1 for folds in folds_of_patient.values())
    assert all(labels == {"covid", "normal"} for labels in labels_of_fold.values())

    everything = {r["image"] for r in rows}
    for fold in ("1", "2", "3"):
        test = set(archive.read(f"splits/fold-{fold}/test.txt").decode().split())
        train = set(archive.read(f"splits/fold-{fold}/train.txt").decode().split())
        assert test == {r["image"] for r in rows if r["fold"] == fold}
        assert train == everything - test
    manifest = {r["image"]: r["fold"] for r in zip_csv(archive, "manifest.csv")}
    assert manifest == {r["image"]: r["fold"] for r in rows}


def test_the_same_seed_gives_the_same_folds(cohort):
    def folds(seed):
        export = export_request(
            dataset=cohort, created_by=None, split="kfold", folds=2, seed=seed, enqueue=False
        )
        export_build(export=export)
        return zip_csv(read_zip(blob_read(export.file.name)), "splits/folds.csv")

    assert folds(3) == folds(3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"formats": []}, "formats must be"),
        ({"formats": ["qata", "tiff"]}, "formats must be"),
        ({"split": "random"}, "split must be one of"),
        ({"stages": [7]}, "has no stage 7"),
        ({"stages": [2], "include_imported": False}, "nothing to export"),
        ({"split": "stored"}, "have no train/test split"),
        ({"split": "kfold", "folds": 1}, "folds must be 2 to"),
        ({"split": "kfold", "folds": 9}, "9 folds need at least 9 patients"),
    ],
)
def test_bad_choices_are_refused_with_a_reason_and_create_nothing(tmp_path, options, message):
    dataset = import_dataset(write_files(tmp_path / "src", CASES))
    accept_all(dataset)
    dataset.stages.create(number=2, mode="nway")
    with pytest.raises(ExportError, match=message):
        export_request(dataset=dataset, created_by=None, enqueue=False, **options)
    assert Export.objects.count() == 0 and Job.objects.count() == 0


def test_two_cases_with_one_file_name_are_both_exported(tmp_path):
    for folder, size in (("one", (40, 30)), ("two", (44, 34))):
        write_files(tmp_path / "src" / folder, {"x.png": (*size, "covid", folder)})
        (tmp_path / "src" / folder / "labels.csv").unlink()
    dataset = import_dataset(tmp_path / "src")
    accept_all(dataset)
    export = export_request(dataset=dataset, created_by=None, formats=["qata"], enqueue=False)
    export_build(export=export)
    names = sorted(read_zip(blob_read(export.file.name)).namelist())
    images = [n for n in names if n.startswith("Images/")]
    assert len(images) == 2 and "Images/x.png" in images
    assert all(f"Ground-truths/mask_{n[7:]}" in names for n in images)


def test_a_finished_export_never_changes(tmp_path):
    scenario = provenance_scenario(tmp_path)
    export = export_request(dataset=scenario.dataset, created_by=None, enqueue=False)
    first = export_build(export=export)
    # New accepted masks after the export do not reach it, even if it is built again.
    GroundTruth.objects.filter(radiograph__name="a.png").delete()
    again = export_build(export=export)
    export.refresh_from_db()
    assert again == first and export.n_cases == 4
    assert stored_paths(top=["exports"]) == [export.file.name]


def test_a_cancelled_build_stores_nothing(tmp_path):
    scenario = provenance_scenario(tmp_path)
    export = export_request(dataset=scenario.dataset, created_by=None, enqueue=False)
    seen = []

    def progress(done, total):
        seen.append((done, total))
        return done == 2  # stop after the second case

    with pytest.raises(ExportCancelled):
        export_build(export=export, progress=progress)
    export.refresh_from_db()
    assert seen == [(1, 4), (2, 4)]
    assert not export.file and stored_paths(top=["exports"]) == []
