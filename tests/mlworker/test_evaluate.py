"""`python -m mlworker evaluate` and mlworker.evaluate: numbers equal to mlworker.metrics on
the same arrays, the files a research group gets, and the same masks as `predict`."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score, jaccard_score, roc_auc_score

from mlworker.__main__ import main
from mlworker.data import load_qata_folder
from mlworker.evaluate import EvaluationTally, evaluate_probabilities, pick_gallery
from mlworker.evaluate_report import evaluation_json, summary_lines
from mlworker.metrics import case_evaluation, confusion_counts, mean_dice, per_image_counts, scores
from mlworker.predict import predict_probabilities
from tests.mlworker.test_data import write_qata_folder

pytestmark = [
    pytest.mark.keras,
    # Keras' TensorFlow backend converts tensors with np.array(x) on every step; noise only.
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

SIZE = 32


def brightness_model(size: int = SIZE) -> keras.Model:
    """Ŷ = pixel brightness / 255: the test folder's bright blobs come out infected."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    conv = keras.layers.Conv2D(1, 1, use_bias=False, name="mask")
    outputs = conv(x)
    conv.set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32)])
    return keras.Model(inputs, outputs)


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "bright.keras"
    brightness_model().save(path)
    return path


def evaluate(*argv: str) -> int:
    return main(["evaluate", *map(str, argv)])


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def reference(data, *, size=SIZE, names=None):
    """What mlworker.metrics says about the same maps, computed here step by step."""
    cases = load_qata_folder(data, size=size, names=names)
    probs = predict_probabilities(brightness_model(), cases.images)
    covid = ~cases.is_control if cases.labels[0] else np.ones(len(cases), bool)
    return cases, probs, covid


def test_it_reports_what_mlworker_metrics_computes_on_the_same_maps(tmp_path, model_path, capsys):
    data, out = tmp_path / "data", tmp_path / "report"
    write_qata_folder(data, n=7, controls=4, size=48)

    assert evaluate("--model", model_path, "--data", data, "--out", out) == 0

    printed = capsys.readouterr().out
    assert "pixel (COVID-19 cases with masks), 7 cases" in printed and "detection" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    cases, probs, covid = reference(data)
    assert metrics["size"] == SIZE and metrics["cases"]["covid_with_mask"] == 7
    assert metrics["cases"]["control"] == 4
    # Pixel level over the COVID-19 cases: the metrics module on the pooled matrix.
    counts = confusion_counts(cases.masks[covid], probs[covid] >= 0.5)
    expected = scores(counts)
    assert metrics["pixel"]["counts"] == {
        "tp": counts.tp,
        "fp": counts.fp,
        "tn": counts.tn,
        "fn": counts.fn,
    }
    for name in ("sensitivity", "specificity", "precision", "f1", "f2", "iou"):
        assert metrics["pixel"][name]["value"] == pytest.approx(expected[name].value, abs=1e-6)
        assert metrics["pixel"][name]["ci95"] == pytest.approx(expected[name].ci, abs=1e-6)
    truth, pred = cases.masks[covid].ravel(), (probs[covid] >= 0.5).ravel()
    assert metrics["pixel"]["f1"]["value"] == pytest.approx(f1_score(truth, pred), abs=1e-6)
    assert metrics["pixel"]["iou"]["value"] == pytest.approx(jaccard_score(truth, pred), abs=1e-6)
    rows = per_image_counts(cases.masks[covid], probs[covid])
    assert metrics["pixel"]["mean_dice"]["value"] == pytest.approx(mean_dice(rows), abs=1e-6)
    # The pixel AUC comes from 1/1024 bins: close to the exact one.
    auc = roc_auc_score(truth, probs[covid].ravel())
    assert metrics["pixel"]["roc_auc"] == pytest.approx(auc, abs=2e-3)
    # Case detection: COVID-19 when any pixel reaches 0.5.
    detection = case_evaluation(covid, probs.max(axis=(1, 2)))
    assert metrics["detection"]["counts"]["tp"] == detection.counts.tp
    assert metrics["detection"]["specificity"]["value"] == pytest.approx(
        detection.scores["specificity"].value
    )
    assert metrics["pixel_with_controls"]["cases"] == 11
    # The blobs are brighter than any control's noise: a sensible report, not just a copy.
    assert metrics["pixel"]["f1"]["value"] > 0.8 and metrics["detection"]["f1"]["value"] == 1


def test_mirror_is_recorded_and_a_symmetric_model_scores_the_same(tmp_path, model_path):
    data = tmp_path / "data"
    write_qata_folder(data, n=5, size=40)
    assert evaluate("--model", model_path, "--data", data, "--out", tmp_path / "plain") == 0
    assert (
        evaluate("--model", model_path, "--data", data, "--out", tmp_path / "tta", "--mirror") == 0
    )
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    tta = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    assert plain["mirror"] is False and tta["mirror"] is True
    # Brightness is left-right symmetric: averaging with the mirror image changes nothing.
    assert tta["pixel"]["f1"]["value"] == pytest.approx(plain["pixel"]["f1"]["value"], abs=1e-4)


def test_it_writes_the_figures_the_per_image_table_and_a_ranked_gallery(tmp_path, model_path):
    data, out = tmp_path / "data", tmp_path / "report"
    write_qata_folder(data, n=10, controls=3, size=40)

    assert evaluate("--model", model_path, "--data", data, "--out", out, "--gallery", 2) == 0

    for stem in ("pixel_roc", "pixel_pr", "pixel_confusion", "case_roc", "case_pr"):
        for suffix in ("png", "svg"):
            assert (out / f"{stem}.{suffix}").stat().st_size > 1000, stem
    with Image.open(out / "gallery.png") as image:
        assert image.width > image.height  # three rows of 2 cases × 2 panels
    rows = read_csv(out / "per_image.csv")
    assert len(rows) == 13 and sum(r["truth"] == "control" for r in rows) == 3
    dice = {r["name"]: float(r["dice"]) for r in rows}
    metrics = json.loads((out / "metrics.json").read_text())
    gallery = metrics["gallery"]
    assert [len(gallery[g]) for g in ("best", "median", "worst")] == [2, 2, 2]
    shown = gallery["best"] + gallery["median"] + gallery["worst"]
    assert len(set(shown)) == 6 and all(name.startswith("case_") for name in shown)
    assert min(dice[n] for n in gallery["best"]) >= max(dice[n] for n in gallery["median"])
    assert min(dice[n] for n in gallery["median"]) >= max(dice[n] for n in gallery["worst"])
    maps = sorted(p.name for p in (out / "gallery").iterdir())
    assert maps[0].startswith("best1_") and len(maps) == 6
    with Image.open(out / "gallery" / maps[0]) as image:
        assert image.mode == "RGB" and image.size == (SIZE, SIZE)
    assert set(metrics["files"]) >= {"gallery.png", "per_image.csv", "case_roc.png"}


def test_without_controls_there_are_no_detection_figures(tmp_path, model_path):
    data, out = tmp_path / "data", tmp_path / "report"
    write_qata_folder(data, n=5, unlabelled=2, size=32)

    assert evaluate("--model", model_path, "--data", data, "--out", out) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert "detection" not in metrics and "pixel_with_controls" not in metrics
    assert metrics["left_out_unlabelled"] == 2 and metrics["cases"]["total"] == 5
    assert not (out / "case_roc.png").exists() and (out / "pixel_roc.png").exists()


def test_names_size_and_truth_choose_cases_resolution_and_masks(tmp_path, model_path):
    data, out = tmp_path / "data", tmp_path / "report"
    names = write_qata_folder(data, n=6, size=64)
    (tmp_path / "valid.txt").write_text("\n".join(names[3:]) + "\n")
    truth = tmp_path / "truth"
    truth.mkdir()
    for name in names:  # the truth: the top half of every image
        mask = np.zeros((64, 64), np.uint8)
        mask[:32] = 255
        Image.fromarray(mask).save(truth / f"mask_{name}")

    argv = ["--model", model_path, "--data", data, "--out", out, "--names", tmp_path / "valid.txt"]
    assert evaluate(*argv, "--size", 48, "--truth", truth) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["size"] == 48 and metrics["model_input_size"] == [SIZE, SIZE]
    assert [r["name"] for r in read_csv(out / "per_image.csv")] == names[3:]
    cases = load_qata_folder(data, size=48, names=names[3:])
    probs = predict_probabilities(brightness_model(), cases.images)  # back at 48 pixels
    half = np.zeros((3, 48, 48), bool)
    half[:, :24] = True
    expected = scores(confusion_counts(half, probs >= 0.5))
    assert metrics["pixel"]["f1"]["value"] == pytest.approx(expected["f1"].value, abs=1e-6)
    assert metrics["pixel"]["counts"]["tp"] + metrics["pixel"]["counts"]["fn"] == 3 * 48 * 24


def test_predict_on_the_same_model_reproduces_the_evaluated_masks(tmp_path, model_path):
    data, out, predicted = tmp_path / "data", tmp_path / "report", tmp_path / "pred"
    names = write_qata_folder(data, n=5, size=48)
    assert evaluate("--model", model_path, "--data", data, "--out", out) == 0
    assert (
        main(["predict", "--model", str(model_path), "--data", str(data), "--out", str(predicted)])
        == 0
    )

    rows = {r["name"]: r for r in read_csv(out / "per_image.csv")}
    cases = load_qata_folder(data, size=SIZE)
    for name, truth in zip(names, cases.masks, strict=True):
        mask = np.asarray(Image.open(predicted / "Ground-truths" / f"mask_{name}")) == 255
        c = confusion_counts(truth, mask)
        assert [int(rows[name][k]) for k in ("tp", "fp", "tn", "fn")] == [c.tp, c.fp, c.tn, c.fn]


def test_bad_input_is_refused_with_exit_2_and_nothing_written(tmp_path, model_path, capsys):
    data = tmp_path / "data"
    write_qata_folder(data, n=2, size=32)
    nomasks = tmp_path / "nomasks"
    write_qata_folder(nomasks, n=0, unlabelled=2, size=32)
    (tmp_path / "junk.keras").write_bytes(b"not a model")
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "missing.txt").write_text("nowhere.png\n")
    out = tmp_path / "out"
    common = ["--out", out]
    cases = [
        (["--model", tmp_path / "none.keras", "--data", data], "no model file"),
        (["--model", model_path, "--data", tmp_path / "nowhere"], "not a folder"),
        (["--model", tmp_path / "junk.keras", "--data", data], "cannot load"),
        (["--model", model_path, "--data", data, "--threshold", 1.5], "--threshold"),
        (["--model", model_path, "--data", data, "--names", tmp_path / "empty.txt"], "no image"),
        (["--model", model_path, "--data", data, "--names", tmp_path / "missing.txt"], "not in"),
        (["--model", model_path, "--data", data, "--truth", tmp_path / "no"], "not a folder"),
        (["--model", model_path, "--data", data, "--truth", tmp_path], "no mask for"),
        (["--model", model_path, "--data", nomasks], "no COVID-19 case with a ground-truth"),
    ]
    for argv, message in cases:
        assert evaluate(*argv, *common) == 2, message
        assert message in capsys.readouterr().err
    assert not out.exists()
    assert evaluate("--model", model_path, "--data", data, "--out", data) == 2


def test_perfect_maps_score_one_and_the_gallery_ranks_by_dice():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 16, 16)) > 0.7
    probs = masks.astype(np.float32) * 0.9 + 0.05
    probs[4] = 0.05  # one case missed entirely
    controls = np.zeros((2, 16, 16), bool)
    evaluation = evaluate_probabilities(
        names=[f"c{i}" for i in range(8)],
        masks=np.concatenate([masks, controls]),
        probs=np.concatenate([probs, np.full((2, 16, 16), 0.2, np.float32)]),
        is_covid=[True] * 6 + [False] * 2,
    )
    assert evaluation.dice[4] == 0 and evaluation.dice[:4].tolist() == [1.0] * 4
    assert evaluation.gallery["worst"][0] == 4
    assert evaluation.detection.scores["sensitivity"].value == pytest.approx(5 / 6)
    assert evaluation.detection.scores["specificity"].value == 1.0
    assert evaluation.pixel.scores["precision"].value == 1.0
    assert pick_gallery(np.array([0.2, 0.9, 0.5]), np.arange(3), per_group=5) == {
        "best": [1, 2, 0],
        "median": [1, 2, 0],
        "worst": [0, 2, 1],
    }
    with pytest.raises(ValueError, match="one of each"):
        evaluate_probabilities(names=["a"], masks=masks, probs=probs, is_covid=[True] * 6)
    with pytest.raises(ValueError, match="nothing to segment"):
        evaluate_probabilities(names=["a"], masks=masks[:1], probs=probs[:1], is_covid=[False])


def test_cases_scored_in_chunks_give_the_evaluation_of_all_of_them_at_once():
    rng = np.random.default_rng(1)
    masks = rng.random((9, 12, 12)) > 0.6
    masks[6:] = False  # three controls
    probs = rng.random((9, 12, 12)).astype(np.float32)
    is_covid = [True] * 6 + [False] * 3
    whole = evaluate_probabilities(
        names=[str(i) for i in range(9)], masks=masks, probs=probs, is_covid=is_covid
    )
    tally = EvaluationTally()
    for start in (0, 4, 7):
        stop = {0: 4, 4: 7, 7: 9}[start]
        covid = is_covid[start:stop]
        tally.add(masks[start:stop], probs[start:stop], is_covid=covid, has_mask=covid)
    chunked = tally.result(gallery_per_group=3)
    np.testing.assert_array_equal(chunked.counts, whole.counts)
    np.testing.assert_array_equal(chunked.histogram.positives, whole.histogram.positives)
    for part in ("pixel", "pixel_with_controls"):
        a, b = getattr(chunked, part), getattr(whole, part)
        assert (a.counts, a.scores, a.mean_dice, a.roc.auc) == (
            b.counts,
            b.scores,
            b.mean_dice,
            b.roc.auc,
        )
    assert chunked.detection == whole.detection and chunked.case_roc.auc == whole.case_roc.auc
    assert chunked.gallery == whole.gallery and chunked.names == whole.names
    # The detection rule's severity: the share of each image predicted infected.
    np.testing.assert_array_equal(chunked.severities, (probs >= 0.5).mean(axis=(1, 2)))


def test_small_and_large_lesions_are_reported_apart_with_the_dice_distribution():
    # 50×50 images: a 4-pixel lesion is 0.16 % of the image (small), a 400-pixel one 16 %.
    masks = np.zeros((4, 50, 50), bool)
    masks[0, :2, :2] = True  # small, found
    masks[1, 10:30, 10:30] = True  # large, found
    masks[2, 10:30, 10:30] = True  # large, missed
    probs = np.where(masks, 0.9, 0.1).astype(np.float32)
    probs[2] = 0.1
    evaluation = evaluate_probabilities(
        names=["s", "l1", "l2", "control"], masks=masks, probs=probs, is_covid=[True] * 3 + [False]
    )
    pixel = evaluation.pixel
    assert pixel.by_lesion_size == {"small": (1, 1.0), "large": (2, 0.5)}
    assert pixel.dice_quantiles == (0.0, 0.5, 1.0, 1.0, 1.0)
    # With the control (Dice 1, no lesion) the size groups do not change.
    assert evaluation.pixel_with_controls.by_lesion_size == pixel.by_lesion_size
    metrics = evaluation_json(evaluation)
    assert metrics["pixel"]["dice_by_lesion_size"]["large"] == {"cases": 2, "mean_dice": 0.5}
    assert metrics["pixel"]["mean_dice"]["quantiles"]["median"] == 1.0
    # Pooled F1 (404 found of 804 pixels) and mean per-image Dice (2/3) both printed.
    text = "\n".join(summary_lines(evaluation))
    assert "pooled F1" in text and "mean per-image Dice 66.67" in text
    assert "small lesions 1 cases mean Dice 100.00" in text
