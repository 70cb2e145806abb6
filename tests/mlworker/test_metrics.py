"""Metrics (issue "mlworker engine", item 8): every number checked against scikit-learn."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn import metrics as skm

from mlworker.curves import ScoreHistogram, precision_recall_curve, roc_curve
from mlworker.metrics import (
    Counts,
    Score,
    case_evaluation,
    confidence_radius,
    confusion_counts,
    dice,
    dice_from_iou,
    dice_per_image,
    fold_summary,
    mean_dice,
    per_image_counts,
    scores,
)

NAN = np.nan


def _random_labels(seed: int, n: int = 500, positive_rate: float = 0.3):
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < positive_rate
    pred = np.where(rng.random(n) < 0.75, truth, rng.random(n) < 0.5)
    return truth.astype(int), pred.astype(int)


def _sklearn_scores(truth, pred, beta):
    truth, pred = np.asarray(truth), np.asarray(pred)
    kw = {"zero_division": NAN}
    return {
        "sensitivity": skm.recall_score(truth, pred, **kw),
        "specificity": skm.recall_score(truth, pred, pos_label=0, **kw),
        "precision": skm.precision_score(truth, pred, **kw),
        "accuracy": skm.accuracy_score(truth, pred),
        "f1": skm.f1_score(truth, pred, **kw),
        f"f{beta:g}": skm.fbeta_score(truth, pred, beta=beta, **kw),
        # jaccard_score has no zero_division=nan; an empty union is the undefined case.
        "iou": skm.jaccard_score(truth, pred) if np.any(truth | pred) else NAN,
    }


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("beta", [2.0, 0.5, 3.0])
def test_scores_match_scikit_learn_on_random_data(seed, beta):
    truth, pred = _random_labels(seed)
    counts = confusion_counts(truth, pred)
    np.testing.assert_array_equal(counts.matrix(), skm.confusion_matrix(truth, pred, labels=[0, 1]))
    ours = scores(counts, beta=beta)
    expected = _sklearn_scores(truth, pred, beta)
    assert list(ours) == list(expected)
    for name, value in expected.items():
        assert ours[name].value == pytest.approx(value, abs=1e-12), name


def test_the_f2_score_is_reported_by_default():
    truth, pred = _random_labels(9)
    ours = scores(confusion_counts(truth, pred))
    assert ours["f2"].value == pytest.approx(skm.fbeta_score(truth, pred, beta=2))


@pytest.mark.parametrize(
    ("truth", "pred"),
    [
        ([0, 0, 0, 0], [0, 0, 0, 0]),  # no positives anywhere: sensitivity, precision, F undefined
        ([1, 1, 0, 0], [0, 0, 0, 0]),  # nothing predicted positive: precision undefined
        ([1, 1, 1, 1], [1, 0, 1, 1]),  # no negatives: specificity undefined
    ],
)
def test_zero_denominators_give_nan_like_scikit_learn_zero_division_nan(truth, pred):
    ours = scores(confusion_counts(np.array(truth), np.array(pred)))
    for name, value in _sklearn_scores(np.array(truth), np.array(pred), 2.0).items():
        if math.isnan(value):
            assert math.isnan(ours[name].value) and math.isnan(ours[name].ci), name
        else:
            assert ours[name].value == pytest.approx(value), name


def test_the_confidence_interval_is_the_papers_formula_over_each_metrics_samples():
    counts = Counts(tp=90, fp=5, tn=880, fn=10)
    result = scores(counts)
    sens = 90 / 100
    assert result["sensitivity"].n == 100
    assert result["sensitivity"].ci == pytest.approx(1.96 * math.sqrt(sens * (1 - sens) / 100))
    assert result["specificity"].n == 885
    assert result["precision"].n == 95
    assert result["accuracy"].n == 985
    assert result["iou"].n == result["f1"].n == 105
    literal = scores(counts, ci_basis="total")
    assert {s.n for s in literal.values()} == {985}
    assert literal["sensitivity"].ci == pytest.approx(1.96 * math.sqrt(sens * (1 - sens) / 985))
    assert Score(0.832, 0.0001, 10).percent() == "83.20 ± 0.01"
    assert confidence_radius(1.0, 50) == 0.0


def test_pixel_counts_accumulate_per_image_and_match_scikit_learn_on_the_flattened_masks():
    rng = np.random.default_rng(3)
    masks = rng.random((12, 20, 24)) < 0.2
    probs = np.clip(masks * 0.6 + rng.random((12, 20, 24)) * 0.5, 0, 1).astype(np.float32)
    rows = per_image_counts((m.astype(np.uint8) * 255 for m in masks), iter(probs))
    assert rows.shape == (12, 4)
    total = Counts.total(rows)
    flat_truth, flat_pred = masks.ravel(), (probs >= 0.5).ravel()
    np.testing.assert_array_equal(total.matrix(), skm.confusion_matrix(flat_truth, flat_pred))
    assert scores(total)["f1"].value == pytest.approx(skm.f1_score(flat_truth, flat_pred))
    assert scores(total)["iou"].value == pytest.approx(skm.jaccard_score(flat_truth, flat_pred))
    # Threshold is configurable.
    strict = Counts.total(per_image_counts(masks, probs, threshold=0.9))
    assert strict.tp + strict.fp == np.count_nonzero(probs >= 0.9)


def test_mean_dice_averages_per_image_f1_and_counts_empty_agreement_as_perfect():
    rng = np.random.default_rng(4)
    masks = rng.random((6, 16, 16)) < 0.3
    probs = rng.random((6, 16, 16)).astype(np.float32)
    masks[0] = False
    probs[0] = 0.1  # a control image predicted empty
    rows = per_image_counts(masks, probs)
    expected = np.mean(
        [
            skm.f1_score(m.ravel(), (p >= 0.5).ravel(), zero_division=1.0)
            for m, p in zip(masks, probs, strict=True)
        ]
    )
    assert mean_dice(rows) == pytest.approx(expected)


def test_dice_of_two_masks_is_f1_of_their_pixels_and_one_when_both_are_empty():
    rng = np.random.default_rng(5)
    a, b = rng.random((2, 18, 22)) < 0.3
    assert dice(a, b) == pytest.approx(skm.f1_score(a.ravel(), b.ravel()))
    assert dice(a, b) == 2 * np.count_nonzero(a & b) / (a.sum() + b.sum())
    assert dice(a.astype(np.uint8) * 255, b) == dice(a, b)  # nonzero is inside
    empty = np.zeros((4, 4), bool)
    assert dice(empty, empty) == 1.0 and dice(empty, ~empty) == 0.0
    rows = per_image_counts([a, empty], [b.astype(np.float32), empty.astype(np.float32)])
    assert dice_per_image(rows).tolist() == [dice(a, b), 1.0]
    assert dice_from_iou(skm.jaccard_score(a.ravel(), b.ravel())) == pytest.approx(dice(a, b))


def test_folds_report_per_fold_scores_their_mean_and_the_cumulative_matrix():
    folds = []
    truth_all, pred_all = [], []
    for seed in range(5):
        truth, pred = _random_labels(seed, n=200 + 17 * seed)
        folds.append(confusion_counts(truth, pred))
        truth_all.append(truth)
        pred_all.append(pred)
    summary = fold_summary(folds)
    cat_truth, cat_pred = np.concatenate(truth_all), np.concatenate(pred_all)
    np.testing.assert_array_equal(
        summary.cumulative_counts.matrix(), skm.confusion_matrix(cat_truth, cat_pred)
    )
    assert summary.cumulative["sensitivity"].value == pytest.approx(
        skm.recall_score(cat_truth, cat_pred)
    )
    per_fold_f1 = [skm.f1_score(t, p) for t, p in zip(truth_all, pred_all, strict=True)]
    assert [f["f1"].value for f in summary.folds] == pytest.approx(per_fold_f1)
    assert summary.mean["f1"].value == pytest.approx(np.mean(per_fold_f1))
    assert summary.mean["f1"].n == summary.cumulative["f1"].n


def test_case_evaluation_calls_a_case_covid_when_its_max_probability_reaches_the_threshold():
    rng = np.random.default_rng(5)
    truth = rng.random(300) < 0.4
    max_probs = np.clip(truth * 0.35 + rng.random(300) * 0.6, 0, 1)
    result = case_evaluation(truth, max_probs)
    pred = max_probs >= 0.5
    np.testing.assert_array_equal(result.counts.matrix(), skm.confusion_matrix(truth, pred))
    assert result.scores["specificity"].value == pytest.approx(
        skm.recall_score(truth, pred, pos_label=0)
    )
    assert case_evaluation(truth, max_probs, threshold=0.8).counts.tp < result.counts.tp


@pytest.mark.parametrize("seed", range(4))
def test_roc_and_pr_curves_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    truth = (rng.random(400) < 0.35).astype(int)
    # Rounded scores: many ties, as maximum probabilities of saturated maps have.
    score = np.round(np.clip(truth * 0.3 + rng.random(400) * 0.7, 0, 1), 2)
    roc = roc_curve(truth, score)
    fpr, tpr, thr = skm.roc_curve(truth, score, drop_intermediate=False)
    np.testing.assert_allclose(roc.fpr, fpr)
    np.testing.assert_allclose(roc.tpr, tpr)
    np.testing.assert_allclose(roc.thresholds, thr)
    assert roc.auc == pytest.approx(skm.roc_auc_score(truth, score), abs=1e-12)

    pr = precision_recall_curve(truth, score)
    precision, recall, pthr = skm.precision_recall_curve(truth, score)
    np.testing.assert_allclose(pr.precision, precision)
    np.testing.assert_allclose(pr.recall, recall)
    np.testing.assert_allclose(pr.thresholds, pthr)
    assert pr.average_precision == pytest.approx(
        skm.average_precision_score(truth, score), abs=1e-12
    )


def test_pixel_histogram_curves_equal_exact_curves_for_scores_on_the_bin_grid():
    rng = np.random.default_rng(7)
    masks = rng.random((5, 32, 32)) < 0.25
    probs = np.clip(masks * 0.4 + rng.random((5, 32, 32)) * 0.6, 0, 1)
    probs = np.floor(probs * 1024) / 1024  # on the grid: binning loses nothing
    histogram = ScoreHistogram(bins=1024)
    for mask, prob in zip(masks, probs, strict=True):
        histogram.add(mask, prob)
    truth, score = masks.ravel().astype(int), probs.ravel()
    assert histogram.roc().auc == pytest.approx(skm.roc_auc_score(truth, score), abs=1e-12)
    assert histogram.pr().average_precision == pytest.approx(
        skm.average_precision_score(truth, score), abs=1e-12
    )
    fpr, tpr, _ = skm.roc_curve(truth, score, drop_intermediate=False)
    np.testing.assert_allclose(histogram.roc().fpr, fpr)
    np.testing.assert_allclose(histogram.roc().tpr, tpr)


def test_pixel_histogram_auc_is_close_for_arbitrary_scores():
    rng = np.random.default_rng(8)
    masks = rng.random((4, 64, 64)) < 0.2
    probs = np.clip(masks * 0.3 + rng.random((4, 64, 64)) * 0.7, 0, 1).astype(np.float32)
    histogram = ScoreHistogram()
    for mask, prob in zip(masks, probs, strict=True):
        histogram.add(mask, prob)
    exact = skm.roc_auc_score(masks.ravel(), probs.ravel())
    assert histogram.roc().auc == pytest.approx(exact, abs=2e-3)


def test_best_f1_threshold_is_the_pooled_dice_optimum_over_every_bin_edge():
    rng = np.random.default_rng(3)
    masks = rng.random((6, 32, 32)) < 0.3
    # Overconfident maps: infected pixels score 0.3-1, healthy ones 0-0.75, so 0.5 is not best.
    probs = np.where(masks, 0.3 + 0.7 * rng.random(masks.shape), 0.75 * rng.random(masks.shape))
    histogram = ScoreHistogram(bins=64)
    for mask, prob in zip(masks, probs, strict=True):
        histogram.add(mask, prob)
    threshold, f1 = histogram.best_f1_threshold()
    brute = {t: dice(masks, probs >= t) for t in np.arange(1, 64) / 64}
    best = max(brute.values())
    assert f1 == pytest.approx(best, abs=1e-12)
    assert brute[threshold] == pytest.approx(best, abs=1e-12)
    assert f1 > brute[0.5]  # the point of choosing it
    with pytest.raises(ValueError, match="no infected pixel"):
        empty = ScoreHistogram(bins=8)
        empty.add(np.zeros((4, 4)), np.zeros((4, 4)))
        empty.best_f1_threshold()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: roc_curve(np.ones(5), np.linspace(0, 1, 5)), "both positive and negative"),
        (lambda: precision_recall_curve(np.zeros(5), np.linspace(0, 1, 5)), "positive"),
        (lambda: roc_curve(np.ones(5), np.ones(4)), "equally long"),
        (lambda: confusion_counts(np.ones(5), np.ones(4)), "shape"),
        (lambda: per_image_counts([np.ones((4, 4))], [np.ones((4, 5))]), "image 0"),
        (lambda: per_image_counts([np.ones((4, 4))] * 2, [np.ones((4, 4))]), "length"),
        (lambda: scores(Counts(1, 1, 1, 1), beta=0), "beta"),
        (lambda: fold_summary([]), "at least one fold"),
        (lambda: Counts(-1, 0, 0, 0), ">= 0"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_pixel_counting_of_1429_masks_at_224_takes_well_under_a_second():
    rng = np.random.default_rng(0)
    masks = rng.random((1429, 224, 224), dtype=np.float32) < 0.1  # the QaTa valid split's size
    probs = rng.random((1429, 224, 224), dtype=np.float32)
    start = time.perf_counter()
    rows = per_image_counts(masks, probs)
    elapsed = time.perf_counter() - start
    assert Counts.total(rows).n == 1429 * 224 * 224
    assert elapsed < 0.8, f"{elapsed:.2f} s"
