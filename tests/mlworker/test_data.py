"""Reading QaTa-COV19-layout folders and patient-grouped, stratified splits."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlworker.data import (
    DataError,
    kfold_splits,
    load_qata_folder,
    patient_of,
    train_val_split,
)


def write_qata_folder(
    root: Path,
    *,
    n: int = 6,
    size: int = 64,
    unlabelled: int = 0,
    controls: int = 0,
    seed: int = 0,
) -> list[str]:
    """Writes `n` radiographs with a bright blob and its 0/255 mask, `unlabelled` more
    without masks and `controls` blob-free control images listed in labels.csv."""
    rng = np.random.default_rng(seed)
    (root / "Images").mkdir(parents=True, exist_ok=True)
    (root / "Ground-truths").mkdir(exist_ok=True)
    rows_, cols_ = np.mgrid[:size, :size]
    names, rows = [], []
    for i in range(n + unlabelled + controls):
        name = f"case_{i:03d}.png"
        image = rng.normal(70, 12, (size, size))
        mask = np.zeros((size, size), bool)
        if i < n + unlabelled:
            r, c = rng.integers(size // 4, 3 * size // 4, 2)
            mask = (rows_ - r) ** 2 + (cols_ - c) ** 2 <= (size // 8) ** 2
            image[mask] += 110
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "Images" / name)
        if i < n:
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                root / "Ground-truths" / f"mask_{name}"
            )
        label = "control" if i >= n + unlabelled else "covid-19"
        rows.append([name, label, "", f"p{i // 2}", ""])
        names.append(name)
    if controls:
        with (root / "labels.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([["name", "label", "finding", "patient_id", "split"], *rows])
    return names


def test_it_reads_images_and_masks_at_the_working_resolution(tmp_path):
    names = write_qata_folder(tmp_path, n=4, size=48, unlabelled=1)
    cases = load_qata_folder(tmp_path, size=32)
    assert cases.names == names
    assert cases.images.dtype == np.uint8 and cases.images.shape == (5, 32, 32)
    assert cases.masks.dtype == bool and cases.masks.shape == (5, 32, 32)
    assert cases.labelled.tolist() == [True, True, True, True, False]
    assert cases.masks[:4].any(axis=(1, 2)).all() and not cases.masks[4].any()
    # The blob is bright in the image exactly where the mask is.
    for image, mask in zip(cases.images[:4], cases.masks[:4], strict=True):
        assert image[mask].mean() > image[~mask].mean() + 80


def test_resizing_keeps_the_mask_where_it_was(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "Ground-truths").mkdir()
    image = np.zeros((60, 80), np.uint8)
    image[:, :40] = 200
    Image.fromarray(image).save(tmp_path / "Images" / "a.png")
    Image.fromarray(np.where(image > 0, 255, 0).astype(np.uint8)).save(
        tmp_path / "Ground-truths" / "mask_a.png"
    )
    cases = load_qata_folder(tmp_path, size=(30, 20))
    assert cases.images.shape == (1, 30, 20)
    assert cases.masks[0, :, :10].all() and not cases.masks[0, :, 10:].any()
    assert cases.images[0, :, :9].min() == 200 and cases.images[0, :, 11:].max() == 0


def test_rgb_and_16_bit_images_and_0_1_masks_read_right(tmp_path):
    (tmp_path / "images").mkdir()  # the lower-case images/ + masks/ layout
    (tmp_path / "masks").mkdir()
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[4:8] = 255
    Image.fromarray(rgb).save(tmp_path / "images" / "rgb.png")
    deep = np.zeros((16, 16), np.uint16)
    deep[:8] = 4000  # 12-bit data in a 16-bit file
    Image.fromarray(deep).save(tmp_path / "images" / "deep.png")
    mask01 = np.zeros((16, 16), np.uint8)
    mask01[4:8] = 1
    Image.fromarray(mask01).save(tmp_path / "masks" / "mask_rgb.png")
    cases = load_qata_folder(tmp_path, size=16)
    deep_img, rgb_img = cases.images  # sorted by name
    assert rgb_img[4:8].min() == 255 and rgb_img[:4].max() == 0
    assert deep_img[:8].min() == 255 and deep_img[8:].max() == 0
    assert cases.masks[1, 4:8].all() and cases.masks[1].sum() == 4 * 16


def test_labels_csv_marks_controls_patients_and_splits(tmp_path):
    write_qata_folder(tmp_path, n=3, unlabelled=1, controls=2, size=32)
    cases = load_qata_folder(tmp_path, size=32)
    assert cases.labels == ["covid-19"] * 4 + ["control"] * 2
    assert cases.is_control.tolist() == [False] * 4 + [True] * 2
    # Controls count as labelled (their mask is empty), the maskless COVID-19 case not.
    assert cases.labelled.tolist() == [True, True, True, False, True, True]
    assert not cases.masks[4:].any()
    assert cases.patients == ["p0", "p0", "p1", "p1", "p2", "p2"]
    sub = cases.subset([5, 0])
    assert sub.names == [cases.names[5], cases.names[0]] and sub.patients == ["p2", "p0"]
    assert np.array_equal(sub.images[1], cases.images[0])


def test_a_phantom_qata_v2_tree_reads_with_its_root_labels_csv(tmp_path):
    from mlworker.phantoms import generate_cohort, write_qata_layout

    cohort = generate_cohort(seed=1, n_covid=4, n_control=3, size=32, manual_fraction=0.5)
    write_qata_layout(cohort, tmp_path, split_fractions=(1.0, 0.0))
    cases = load_qata_folder(tmp_path / "Train Set", size=32)
    truth = {c.name: c for c in cohort}
    assert [n.removesuffix(".png") for n in cases.names] == sorted(truth)
    for i, name in enumerate(cases.names):
        case = truth[name.removesuffix(".png")]
        # labels.csv names stems; "normal" and "other" are controls; masks where shipped.
        assert cases.labels[i] == case.label and cases.patients[i] == case.patient_id
        assert cases.is_control[i] == (case.label != "covid")
        assert cases.labelled[i] == (case.has_manual or case.label != "covid")
        expected = case.manual_mask if case.has_manual else np.zeros((32, 32), bool)
        assert np.array_equal(cases.masks[i], expected)
    with pytest.raises(DataError, match="v2 root: pass one split folder"):
        load_qata_folder(tmp_path, size=32)


def test_names_pick_and_order_the_images(tmp_path):
    names = write_qata_folder(tmp_path, n=4, size=32)
    cases = load_qata_folder(tmp_path, size=32, names=[names[2], names[0]])
    assert cases.names == [names[2], names[0]]
    with pytest.raises(DataError, match="not in"):
        load_qata_folder(tmp_path, size=32, names=["nope.png"])


def test_progress_is_reported_per_image(tmp_path):
    write_qata_folder(tmp_path, n=3, size=16)
    calls = []
    load_qata_folder(tmp_path, size=16, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "not a folder"),
        (lambda root: root.mkdir(), "no Images/ folder"),
        (lambda root: (root / "Images").mkdir(parents=True), "no images"),
    ],
)
def test_missing_or_empty_folders_are_clear_errors(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DataError, match=message):
        load_qata_folder(root, size=32)


def test_bad_files_are_clear_errors(tmp_path):
    write_qata_folder(tmp_path, n=2, size=16)
    (tmp_path / "labels.csv").write_text("name,label\nghost.png,control\n")
    with pytest.raises(DataError, match="ghost.png"):
        load_qata_folder(tmp_path, size=16)
    (tmp_path / "labels.csv").write_text("name,colour\ncase_000.png,red\n")
    with pytest.raises(DataError, match="unknown columns"):
        load_qata_folder(tmp_path, size=16)
    (tmp_path / "labels.csv").unlink()
    (tmp_path / "Images" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read broken.png"):
        load_qata_folder(tmp_path, size=16)
    with pytest.raises(DataError, match="size"):
        load_qata_folder(tmp_path, size=0)


def test_patient_comes_from_the_bimcv_subject_in_either_case():
    a = patient_of("sub-S03044_ses-E06028_run-1_bp-chest_vp-ap_cr.png")
    b = patient_of("sub-s03044_ses-E07000_run-2_bp-chest_vp-pa_dx.png")
    assert a == b == "sub-s03044"
    assert patient_of("covid_17.png") == "covid_17"


def test_kfold_keeps_each_patient_in_one_fold_and_balances_labels():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), rng.integers(1, 4, 60))
    # One label per patient, as in practice.
    labels = np.array([("control" if g % 3 == 0 else "covid-19") for g in groups])
    folds = kfold_splits(labels, groups, 5, seed=1)
    assert len(folds) == 5
    val_all = np.concatenate([val for _, val in folds])
    assert sorted(val_all) == list(range(len(groups)))  # every case validated exactly once
    overall = np.mean(labels == "control")
    for train, val in folds:
        assert not set(groups[train]) & set(groups[val])
        assert sorted(np.concatenate([train, val])) == list(range(len(groups)))
        assert abs(np.mean(labels[val] == "control") - overall) < 0.12
    again = kfold_splits(labels, groups, 5, seed=1)
    other = kfold_splits(labels, groups, 5, seed=2)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


def test_train_val_split_holds_out_about_the_fraction_by_patient():
    groups = np.arange(100) // 2
    labels = np.array(["covid-19"] * 100)
    train, val = train_val_split(labels, groups, val_fraction=0.25, seed=0)
    assert 20 <= len(val) <= 30 and len(train) + len(val) == 100
    assert not set(groups[train]) & set(groups[val])


def test_impossible_splits_are_refused():
    with pytest.raises(DataError, match="at least 2 folds"):
        kfold_splits(["a"] * 4, [0, 1, 2, 3], 1)
    with pytest.raises(DataError, match="3 patients cannot fill 5 folds"):
        kfold_splits(["a"] * 6, [0, 0, 1, 1, 2, 2], 5)
    with pytest.raises(DataError, match="equal"):
        kfold_splits(["a"] * 3, [0, 1], 2)
    with pytest.raises(DataError, match="val_fraction"):
        train_val_split(["a"] * 4, [0, 1, 2, 3], val_fraction=1.0)


def test_real_qata_pairs_read_as_labelled_infection_masks(shared_data):
    folder = shared_data / "real-cxr" / "qata-cov19-sgseg" / "test"
    cases = load_qata_folder(folder, size=64)
    assert len(cases) == 20 and cases.labelled.all()
    fractions = cases.masks.mean(axis=(1, 2))
    # SOURCES.md: foreground covers 0.6 %-30.5 % at 224 px; nearest resizing keeps it close.
    assert fractions.min() > 0.002 and fractions.max() < 0.35
    assert cases.images.std() > 20  # real radiographs, not blank


def test_real_qata_train_names_never_split_a_patient(shared_data):
    names = sorted((shared_data / "qata-cov19" / "Train Set" / "Images").iterdir())
    groups = np.array([patient_of(p.name) for p in names])
    labels = np.array(["covid-19"] * len(groups))
    assert max(Counter(groups).values()) > 1  # some patients have several radiographs
    for train, val in kfold_splits(labels, groups, 5, seed=0):
        assert not set(groups[train]) & set(groups[val])
        assert 0.15 < len(val) / len(groups) < 0.25
