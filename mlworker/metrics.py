"""Evaluation metrics at pixel and case level, as Degerli et al. 2021 report them.

Paper section "Experimental evaluation" (Tables 2–4, 6–7): confusion matrices;
sensitivity, specificity, precision, accuracy, F1 and F2; a 95 % confidence interval
r = ±z·√(m(1−m)/N) beside each number; per-fold averages and cumulative confusion
matrices over the folds. ROC and PR curves live in mlworker.curves.

Pure numpy: no Keras import, so the web process can use it too.

Zero denominators: a metric with nothing to count over (e.g. precision when nothing is
predicted positive) is NaN, never a made-up 0 or 1; this is scikit-learn's
`zero_division=np.nan`. NaN propagates to its CI; per-fold means skip NaN folds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Z_95 = 1.96  # paper: z = 1.96 for the 95 % confidence interval
CiBasis = Literal["denominator", "total"]


@dataclass(frozen=True)
class Counts:
    """A binary confusion matrix: positives are infected pixels or COVID-19 cases."""

    tp: int
    fp: int
    tn: int
    fn: int

    def __post_init__(self) -> None:
        for name in ("tp", "fp", "tn", "fn"):
            if getattr(self, name) < 0:
                raise ValueError(f"confusion count {name} must be >= 0")

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn
        )

    def as_dict(self) -> dict[str, int]:
        """The four counts as JSON stores them."""
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}

    def matrix(self) -> np.ndarray:
        """scikit-learn's layout: rows are truth (negative, positive), columns prediction."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]], dtype=np.int64)

    @classmethod
    def total(cls, rows: np.ndarray | Iterable[Counts]) -> Counts:
        """Sum per-image rows (tp, fp, tn, fn) or Counts into one confusion matrix."""
        if isinstance(rows, np.ndarray):
            tp, fp, tn, fn = (int(v) for v in rows.reshape(-1, 4).sum(axis=0))
            return cls(tp, fp, tn, fn)
        result = cls(0, 0, 0, 0)
        for row in rows:
            result = result + row
        return result


@dataclass(frozen=True)
class Score:
    """A metric value m with its 95 % CI half-width r over N samples (paper: m ± r)."""

    value: float
    ci: float
    n: int

    @property
    def low(self) -> float:
        return self.value - self.ci

    @property
    def high(self) -> float:
        return self.value + self.ci

    def percent(self, digits: int = 2) -> str:
        """The paper's table cell: '83.20 ± 0.01'."""
        if math.isnan(self.value):
            return "n/a"
        return f"{100 * self.value:.{digits}f} ± {100 * self.ci:.{digits}f}"


def _binary(array: np.ndarray, *, name: str) -> np.ndarray:
    """Truth and decisions: bool as is, numbers nonzero = positive."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must be boolean or numeric (got {array.dtype})")
    return array != 0


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> Counts:
    """Confusion counts of two same-shaped binary arrays (any shape; nonzero = positive)."""
    truth = _binary(y_true, name="y_true")
    pred = _binary(y_pred, name="y_pred")
    if truth.shape != pred.shape:
        raise ValueError(f"y_true shape {truth.shape} differs from y_pred shape {pred.shape}")
    # Three counts of boolean arrays, no int copies: memory stays at the input's size.
    tp = int(np.count_nonzero(truth & pred))
    positives = int(np.count_nonzero(truth))
    predicted = int(np.count_nonzero(pred))
    fp, fn = predicted - tp, positives - tp
    return Counts(tp=tp, fp=fp, tn=truth.size - tp - fp - fn, fn=fn)


def per_image_counts(
    masks: Iterable[np.ndarray], probs: Iterable[np.ndarray], *, threshold: float = 0.5
) -> np.ndarray:
    """Pixel-level confusion counts per image, shape (n_images, 4): tp, fp, tn, fn.

    masks: ground-truth masks (bool or 0/1 or 0/255; nonzero = infected).
    probs: probability maps Ŷ of the same shapes; a pixel is predicted infected when
    Ŷ ≥ threshold (paper: 0.5). Both may be generators or (N, H, W) arrays; images are
    counted one at a time, so memory stays at one image whatever N is.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1] (got {threshold})")
    rows: list[tuple[int, int, int, int]] = []
    sentinel = object()
    mask_iter, prob_iter = iter(masks), iter(probs)
    while True:
        mask, prob = next(mask_iter, sentinel), next(prob_iter, sentinel)
        if mask is sentinel and prob is sentinel:
            break
        if mask is sentinel or prob is sentinel:
            raise ValueError(f"masks and probs differ in length (stopped at image {len(rows)})")
        prob = np.asarray(prob)
        mask = np.asarray(mask)
        if mask.ndim == prob.ndim + 1 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if prob.ndim == mask.ndim + 1 and prob.shape[-1] == 1:
            prob = prob[..., 0]
        if mask.shape != prob.shape:
            raise ValueError(
                f"image {len(rows)}: mask shape {mask.shape} differs from prob shape {prob.shape}"
            )
        pred = prob if prob.dtype == bool else prob >= threshold
        c = confusion_counts(mask, pred)
        rows.append((c.tp, c.fp, c.tn, c.fn))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def dice_per_image(rows: np.ndarray) -> np.ndarray:
    """Per-image Dice 2TP/(2TP+FP+FN) of rows (tp, fp, tn, fn) from per_image_counts.

    An image where truth and prediction are both empty agrees perfectly: Dice 1
    (scikit-learn's f1_score with zero_division=1), so control images count.
    """
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    tp, fp, fn = rows[:, 0], rows[:, 1], rows[:, 3]
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, 1.0)  # Dice (Sørensen 1948)


def mean_dice(rows: np.ndarray) -> float:
    """Mean per-image Dice (dice_per_image) over rows from per_image_counts."""
    dice = dice_per_image(rows)
    if len(dice) == 0:
        raise ValueError("mean_dice needs at least one image")
    return float(dice.mean())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice 2|A∩B| / (|A| + |B|) of two same-shaped masks (bool, or nonzero = inside);
    two empty masks agree perfectly."""
    c = confusion_counts(a, b)
    return float(dice_per_image(np.array([c.tp, c.fp, c.tn, c.fn]))[0])


def dice_from_iou(iou: float) -> float:
    """Dice of the confusion matrix an IoU comes from: Dice = 2 IoU / (1 + IoU) exactly."""
    return 2 * iou / (1 + iou)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def confidence_radius(value: float, n: int, *, z: float = Z_95) -> float:
    """Paper, "Experimental evaluation": r = ±z·√(m(1−m)/N), z = 1.96 for 95 % CI.

    This is the normal-approximation (Wald) interval of a proportion m over N samples.
    """
    if n <= 0 or math.isnan(value):
        return math.nan
    return z * math.sqrt(max(value * (1.0 - value), 0.0) / n)


def _key(beta: float) -> str:
    return f"f{beta:g}"


def scores(
    counts: Counts,
    *,
    beta: float = 2.0,
    z: float = Z_95,
    ci_basis: CiBasis = "denominator",
) -> dict[str, Score]:
    """Sensitivity, specificity, precision, accuracy, F1, F_beta and IoU with 95 % CIs.

    Keys: sensitivity, specificity, precision, accuracy, f1, f<beta> (f2 by default), iou.

    N in the CI (paper: "N is the total number of samples"). The interval is that of a
    binomial proportion, so by default N is the number of samples the proportion is
    taken over, i.e. the metric's own denominator:
      sensitivity TP+FN (the positives), specificity TN+FP (the negatives),
      precision TP+FP (the predicted positives), accuracy all samples, IoU TP+FP+FN.
      F-scores are no proportion of one set; they are computed from TP, FP and FN only
      (TN never enters), so they take TP+FP+FN like IoU.
    Taking the whole sample count for every metric would make e.g. the sensitivity CI
    of 2,951 COVID-19 cases among 119,316 CXRs forty times too narrow. ci_basis="total"
    reproduces the paper's literal wording (N = all samples for every metric).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0 (got {beta})")
    tp, fp, tn, fn = counts.tp, counts.fp, counts.tn, counts.fn
    b2 = beta * beta
    # value, denominator-N per metric; formulas from the paper's "Experimental evaluation".
    table: dict[str, tuple[float, int]] = {
        "sensitivity": (_ratio(tp, tp + fn), tp + fn),  # TP / (TP + FN)
        "specificity": (_ratio(tn, tn + fp), tn + fp),  # TN / (TN + FP)
        "precision": (_ratio(tp, tp + fp), tp + fp),  # TP / (TP + FP)
        "accuracy": (_ratio(tp + tn, counts.n), counts.n),  # (TP + TN) / all
        # F_β = (1+β²)·P·R / (β²·P + R) = (1+β²)TP / ((1+β²)TP + β²FN + FP); paper uses β=1, 2.
        "f1": (_ratio(2 * tp, 2 * tp + fn + fp), tp + fp + fn),
        _key(beta): (_ratio((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp), tp + fp + fn),
        "iou": (_ratio(tp, tp + fp + fn), tp + fp + fn),  # Jaccard: TP / (TP + FP + FN)
    }
    result = {}
    for name, (value, denominator) in table.items():
        n = counts.n if ci_basis == "total" else denominator
        result[name] = Score(value=value, ci=confidence_radius(value, n, z=z), n=n)
    return result


@dataclass(frozen=True)
class FoldSummary:
    """Paper Tables 2–4, 6–7: per-fold scores, their average, cumulative confusion matrix."""

    folds: tuple[dict[str, Score], ...]
    mean: dict[str, Score]
    cumulative_counts: Counts
    cumulative: dict[str, Score]


def fold_summary(
    fold_counts: Sequence[Counts],
    *,
    beta: float = 2.0,
    z: float = Z_95,
    ci_basis: CiBasis = "denominator",
) -> FoldSummary:
    """Scores of each fold, their mean over folds, and the scores of the summed matrix.

    In k-fold cross-validation every sample is tested exactly once, so the CI of a
    fold-averaged metric uses N from the cumulative matrix (all test samples).
    """
    if not fold_counts:
        raise ValueError("fold_summary needs at least one fold")
    folds = tuple(scores(c, beta=beta, z=z, ci_basis=ci_basis) for c in fold_counts)
    cumulative_counts = Counts.total(fold_counts)
    cumulative = scores(cumulative_counts, beta=beta, z=z, ci_basis=ci_basis)
    mean = {}
    for name, total_score in cumulative.items():
        values = np.array([fold[name].value for fold in folds], dtype=np.float64)
        value = float(np.nanmean(values)) if not np.all(np.isnan(values)) else math.nan
        mean[name] = Score(value, confidence_radius(value, total_score.n, z=z), total_score.n)
    return FoldSummary(folds, mean, cumulative_counts, cumulative)


@dataclass(frozen=True)
class CaseEvaluation:
    """Case-level (COVID-19 detection) results from per-case maximum probabilities."""

    counts: Counts
    scores: dict[str, Score]
    threshold: float


def case_evaluation(
    y_true: np.ndarray,
    max_probs: np.ndarray,
    *,
    threshold: float = 0.5,
    beta: float = 2.0,
    ci_basis: CiBasis = "denominator",
) -> CaseEvaluation:
    """Detection scores: a case is COVID-19 when max Ŷ ≥ threshold (paper: 0.5).

    y_true: 1 for COVID-19 cases, 0 for controls; max_probs: max over each case's Ŷ.
    """
    max_probs = np.asarray(max_probs, dtype=np.float64)
    if max_probs.ndim != 1:
        raise ValueError(f"max_probs must be one value per case (got shape {max_probs.shape})")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1] (got {threshold})")
    counts = confusion_counts(y_true, max_probs >= threshold)
    return CaseEvaluation(counts, scores(counts, beta=beta, ci_basis=ci_basis), threshold)
