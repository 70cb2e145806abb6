"""Phantom CXRs: reproducible, exact truth, plausible manual masks, QaTa-COV19 v2 layout, CLI."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mlworker.__main__ import main
from mlworker.metrics import dice
from mlworker.phantoms import (
    CONTROL_FINDINGS,
    assign_splits,
    generate_case,
    generate_cohort,
    plan_cohort,
    write_gallery,
    write_qata_layout,
)
from mlworker.phantoms.gallery import CAPTION, GAP, HEADER, MANUAL_COLOUR, TRUE_COLOUR
from mlworker.phantoms.layout import stratum


@pytest.fixture(scope="module")
def covid_cohort():
    """24 COVID-19 cases, all with manual masks, at a size small enough to be quick."""
    return generate_cohort(seed=11, n_covid=24, n_control=0, size=128, manual_fraction=1.0)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _cli(out: Path, *extra: str) -> list[str]:
    return [
        "phantoms",
        str(out),
        "--covid",
        "5",
        "--control",
        "4",
        "--size",
        "64",
        "--seed",
        "3",
        "--manual-fraction",
        "0.4",
        *extra,
    ]


def test_same_seed_writes_byte_identical_files(tmp_path, capsys):
    for run in ("a", "b"):
        assert main(_cli(tmp_path / run, "--gallery", str(tmp_path / run / "gallery.png"))) == 0
    first, second = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    n_manual = sum(
        s.has_manual for s in plan_cohort(seed=3, n_covid=5, n_control=4, manual_fraction=0.4)
    )
    assert n_manual > 0
    assert (
        len(first) == 9 + 9 + n_manual + 2 + 1
    )  # images, truths, manual masks, csv + json, gallery
    assert first == second
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(
        f"wrote 9 phantoms (5 COVID-19, {n_manual} with manual masks; 4 controls)"
    )

    assert main([*_cli(tmp_path / "c"), "--seed", "4"]) == 0
    other = _digests(tmp_path / "c")
    changed = [
        k for k in first if k.endswith(".png") and "Images" in k and first[k] != other.get(k)
    ]
    assert changed, "a different seed must give different images"


def test_a_larger_cohort_starts_with_the_smaller_one():
    small = generate_cohort(seed=5, n_covid=3, n_control=2, size=64)
    large = generate_cohort(seed=5, n_covid=7, n_control=6, size=64)
    assert [c.name for c in large[: len(small)]] == [c.name for c in small]
    for a, b in zip(small, large, strict=False):
        assert (a.label, a.finding, a.patient_id, a.has_manual) == (
            b.label,
            b.finding,
            b.patient_id,
            b.has_manual,
        )
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.true_mask, b.true_mask)
        assert np.array_equal(a.manual_mask, b.manual_mask)
        assert dict(a.params) == dict(b.params)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_true_mask_is_exactly_where_the_infection_changes_the_image(seed):
    covid = generate_case(seed=seed, size=128, label="covid")
    same_without = generate_case(seed=seed, size=128, label="normal")
    assert covid.true_mask.any()
    assert np.array_equal(covid.true_mask, covid.opacity > 0)
    assert not (covid.true_mask & ~covid.lung_mask).any(), "infection stays inside the lungs"
    changed = covid.image != same_without.image
    assert not (changed & ~covid.true_mask).any(), "the image changes nowhere outside the mask"
    # Visible, but subtle: ground glass brightens, it does not white out the lung.
    lift = (
        covid.image.astype(int)[covid.true_mask] - same_without.image.astype(int)[covid.true_mask]
    )
    assert lift.min() >= 0
    assert 2 <= lift.mean() <= 40


def test_every_labelled_infection_is_visible_up_to_its_outline():
    """A COVID-19 label with nothing to see would teach a network (and grade it) on noise: each
    phantom brightens its whole mask perceptibly, its outline included."""
    for seed in range(40):
        covid = generate_case(seed=seed, size=128, label="covid")
        without = generate_case(seed=seed, size=128, label="normal")
        lift = covid.image.astype(int) - without.image.astype(int)
        mask = covid.true_mask
        rim = mask & ~ndimage.binary_erosion(mask)
        assert lift[mask].mean() >= 8, f"seed {seed}: infection too faint to see"
        assert lift[rim].mean() >= 4, f"seed {seed}: outline drawn where nothing shows"


@pytest.mark.parametrize("finding", CONTROL_FINDINGS)
def test_controls_carry_no_infection_but_show_their_finding(finding):
    case = generate_case(seed=21, size=128, label="other", finding=finding)
    normal = generate_case(seed=21, size=128, label="normal")
    for c in (case, normal):
        assert not c.true_mask.any() and not c.manual_mask.any() and not c.opacity.any()
        assert not c.has_manual
    assert (case.label, case.finding, normal.finding) == ("other", finding, None)
    if finding == "cardiomegaly":
        assert case.lung_mask.sum() < 0.93 * normal.lung_mask.sum(), "the heart crowds the lungs"
    else:
        lift = case.image.astype(int) - normal.image.astype(int)
        assert (lift[normal.lung_mask] >= 20).sum() >= 10, f"{finding} is a dense opacity"


def test_manual_masks_are_hurried_versions_of_the_truth(covid_cohort):
    scores = [c.manual_dice for c in covid_cohort]
    assert 0.6 <= float(np.mean(scores)) <= 0.8
    assert max(scores) < 0.97, "no reader traces the border exactly"
    ratio = [c.manual_mask.sum() / c.true_mask.sum() for c in covid_cohort]
    assert min(ratio) < 0.9 and max(ratio) > 1.1, "some readers draw too tight, some too generous"
    missed = 0
    for c in covid_cohort:
        labels, n = ndimage.label(c.true_mask, structure=np.ones((3, 3)))
        hit = set(np.unique(labels[c.manual_mask]))
        missed += sum(1 for k in range(1, n + 1) if k not in hit)
    assert missed >= 2, "small patches get missed"


def test_lesions_are_lower_zone_predominant_bilateral_and_peripheral(covid_cohort):
    lower = upper = 0
    bilateral = 0
    lesion_reach, lung_reach = [], []
    for c in covid_cohort:
        rows = np.nonzero(c.lung_mask.any(axis=1))[0]
        middle = (rows[0] + rows[-1]) / 2
        r, col = np.nonzero(c.true_mask)
        lower += int((r > middle).sum())
        upper += int((r <= middle).sum())
        half = c.size / 2
        bilateral += bool((col < half).any() and (col >= half).any())
        lesion_reach.append(np.abs(col + 0.5 - half).mean())
        lung_reach.append(np.abs(np.nonzero(c.lung_mask)[1] + 0.5 - half).mean())
    assert lower > 1.5 * upper
    assert bilateral >= 0.6 * len(covid_cohort)
    assert np.mean(lesion_reach) > np.mean(lung_reach)


def test_it_looks_like_a_chest_radiograph():
    case = generate_case(seed=8, size=128, label="normal")
    img = case.image.astype(float)
    lungs, n_lungs = ndimage.label(case.lung_mask)
    assert n_lungs == 2
    assert 0.2 < case.lung_mask.mean() < 0.5
    rows = np.nonzero(case.lung_mask.any(axis=1))[0]
    mediastinum = img[rows[0] : rows[-1], 60:68]
    abdomen = img[-12:, 32:96]
    assert img[case.lung_mask].mean() + 40 < mediastinum.mean()
    assert img[case.lung_mask].mean() + 40 < abdomen.mean()


def test_layout_is_qata_cov19_v2(tmp_path):
    cases = generate_cohort(seed=2, n_covid=6, n_control=5, size=64, manual_fraction=0.5)
    summary = write_qata_layout(cases, tmp_path / "out", split_fractions=(0.6, 0.4))
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {
        "Train Set",
        "Test Set",
        "hidden-truth",
        "labels.csv",
        "phantoms.json",
    }
    folder = {"train": "Train Set", "test": "Test Set"}
    for split, name in folder.items():
        expected = {f"{c.name}.png" for c in cases if summary.splits[c.name] == split}
        assert {p.name for p in (out / name / "Images").iterdir()} == expected
        manual = {
            f"mask_{c.name}.png" for c in cases if c.has_manual and summary.splits[c.name] == split
        }
        assert {p.name for p in (out / name / "Ground-truths").iterdir()} == manual
    assert {p.name for p in (out / "hidden-truth").iterdir()} == {
        f"mask_{c.name}.png" for c in cases
    }
    assert summary.count("test") > 0 and summary.count("train") > 0
    for c in cases:
        split_dir = out / folder[summary.splits[c.name]]
        image = Image.open(split_dir / "Images" / f"{c.name}.png")
        assert (image.mode, image.size) == ("L", (64, 64))
        assert np.array_equal(np.asarray(image), c.image)
        truth = np.asarray(Image.open(out / "hidden-truth" / f"mask_{c.name}.png"))
        assert set(np.unique(truth)) <= {0, 255} and np.array_equal(truth == 255, c.true_mask)
        if c.has_manual:
            mask = Image.open(split_dir / "Ground-truths" / f"mask_{c.name}.png")
            assert (mask.mode, mask.size) == ("L", (64, 64))
            values = np.asarray(mask)
            assert set(np.unique(values)) <= {0, 255} and np.array_equal(
                values == 255, c.manual_mask
            )
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["name", "label", "finding", "patient_id", "split"]
    assert [
        (r["name"], r["label"], r["finding"] or None, r["patient_id"], r["split"]) for r in rows
    ] == [(c.name, c.label, c.finding, c.patient_id, summary.splits[c.name]) for c in cases]
    with pytest.raises(FileExistsError):
        write_qata_layout(cases, out)


def test_no_patient_is_in_both_splits():
    specs = plan_cohort(seed=9, n_covid=60, n_control=40, manual_fraction=0.3)
    images_per_patient = np.bincount(
        np.unique([s.patient_id for s in specs], return_inverse=True)[1]
    )
    assert images_per_patient.max() == 2 and (images_per_patient == 2).sum() >= 10
    splits = assign_splits(
        ((s.patient_id, stratum(s.label, s.has_manual)) for s in specs), test_fraction=0.25
    )
    assert set(splits) == {s.patient_id for s in specs}
    for kind in {stratum(s.label, s.has_manual) for s in specs}:
        patients = {s.patient_id for s in specs if stratum(s.label, s.has_manual) == kind}
        in_test = sum(splits[p] == "test" for p in patients)
        assert abs(in_test - 0.25 * len(patients)) <= 1, kind
    manual = sum(s.has_manual for s in specs)
    assert abs(manual - 0.3 * 60) <= 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--covid", "-1"], "--covid must be 0 or more"),
        (["--size", "32"], "--size must be at least 64"),
        (["--manual-fraction", "1.5"], "--manual-fraction must be within [0, 1]"),
        (["--test-fraction", "-0.1"], "--test-fraction must be within [0, 1]"),
        (["--covid", "0", "--control", "0"], "nothing to write"),
        (["--gallery", "sheet.jpg"], "--gallery must name a .png file"),
    ],
)
def test_cli_rejects_bad_arguments_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main([*_cli(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(_cli(tmp_path)) == 2
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_generate_case_rejects_inconsistent_arguments():
    with pytest.raises(ValueError, match="ground glass"):
        generate_case(seed=1, label="covid", finding="nodule")
    with pytest.raises(ValueError, match="label must be one of"):
        generate_case(seed=1, label="pneumonia")
    with pytest.raises(ValueError, match="size must be"):
        generate_case(seed=1, size=16)
    with pytest.raises(ValueError, match="seed must be"):
        generate_case(seed=-1)


def test_gallery_shows_every_case_at_full_size(tmp_path):
    cases = generate_cohort(seed=4, n_covid=3, n_control=2, size=64, manual_fraction=1.0)
    path = write_gallery(cases, tmp_path / "gallery.png", columns=2)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    assert sheet.shape == (HEADER + 3 * (64 + CAPTION + GAP) + GAP, 2 * 64 + 3 * GAP, 3)
    first = cases[0]
    tile = sheet[HEADER : HEADER + 64, GAP : GAP + 64]
    grey = (tile == first.image[:, :, None]).all(axis=2)
    assert (grey | first.true_mask | first.manual_mask).all()
    true_edge = first.true_mask & ~ndimage.binary_erosion(first.true_mask)
    assert (tile[true_edge] == TRUE_COLOUR).all()
    assert (tile == MANUAL_COLOUR).all(axis=2).any()
    assert dice(first.manual_mask, first.true_mask) == pytest.approx(first.manual_dice)
