"""ROC and precision–recall curves with their areas, in numpy.

Exact curves from score arrays (case level: one max Ŷ per CXR) follow scikit-learn's
definitions with drop_intermediate=False: one point per distinct score, thresholds
"score ≥ t". Pixel-level curves over thousands of images would need every pixel's score
sorted at once, so ScoreHistogram counts scores into 1024 bins image by image instead;
its curves are the exact curves of the scores floored to multiples of 1/1024.

Pure numpy: no Keras import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RocCurve:
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray  # descending, first is +inf (the (0, 0) corner)
    auc: float


@dataclass(frozen=True)
class PrCurve:
    precision: np.ndarray  # ends with 1.0 at recall 0
    recall: np.ndarray  # descending, ends with 0.0
    thresholds: np.ndarray  # ascending
    average_precision: float


def _check(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(y_true)
    score = np.asarray(y_score, dtype=np.float64)
    if truth.shape != score.shape or truth.ndim != 1:
        raise ValueError(
            f"y_true and y_score must be 1-D and equally long (got {truth.shape}, {score.shape})"
        )
    if not np.all(np.isfinite(score)):
        raise ValueError("y_score contains NaN or infinite values")
    return truth != 0, score


def _cumulative(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold, highest score first."""
    order = np.argsort(score, kind="mergesort")[::-1]
    score, truth = score[order], truth[order]
    # The last index of each run of equal scores: a threshold admits the whole run.
    last = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    tps = np.cumsum(truth, dtype=np.int64)[last]
    fps = last + 1 - tps
    return tps, fps, score[last]


def _roc(tps: np.ndarray, fps: np.ndarray, thresholds: np.ndarray) -> RocCurve:
    if tps[-1] == 0 or fps[-1] == 0:
        raise ValueError("a ROC curve needs both positive and negative samples")
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    fpr = fps / fps[-1]  # FPR = FP / (FP + TN) = 1 − specificity
    tpr = tps / tps[-1]  # TPR = TP / (TP + FN) = sensitivity
    # AUC: trapezoidal rule over the ROC points (Fawcett 2006, "An introduction to ROC analysis").
    auc = float(np.trapezoid(tpr, fpr))
    return RocCurve(fpr, tpr, np.r_[np.inf, thresholds], auc)


def _pr(tps: np.ndarray, fps: np.ndarray, thresholds: np.ndarray) -> PrCurve:
    if tps[-1] == 0:
        raise ValueError("a precision-recall curve needs positive samples")
    precision = tps / (tps + fps)  # every threshold predicts at least one sample positive
    recall = tps / tps[-1]
    precision = np.r_[precision[::-1], 1.0]
    recall = np.r_[recall[::-1], 0.0]
    # AP = Σ_n (R_n − R_{n−1}) P_n: step-wise area, no interpolation (scikit-learn's definition).
    average_precision = float(-np.sum(np.diff(recall) * precision[:-1]))
    return PrCurve(precision, recall, thresholds[::-1], average_precision)


def roc_curve(y_true: np.ndarray, y_score: np.ndarray) -> RocCurve:
    """Exact ROC curve and its AUC for 1-D truth (nonzero = positive) and scores."""
    return _roc(*_cumulative(*_check(y_true, y_score)))


def precision_recall_curve(y_true: np.ndarray, y_score: np.ndarray) -> PrCurve:
    """Exact precision–recall curve and its average precision."""
    return _pr(*_cumulative(*_check(y_true, y_score)))


class ScoreHistogram:
    """Accumulates pixel scores of many images into bins for memory-bounded curves."""

    def __init__(self, bins: int = 1024) -> None:
        if bins < 2:
            raise ValueError("bins must be >= 2")
        self.bins = bins
        self.positives = np.zeros(bins, dtype=np.int64)
        self.negatives = np.zeros(bins, dtype=np.int64)

    def add(self, mask: np.ndarray, prob: np.ndarray) -> None:
        """Count one image: mask nonzero = infected, prob Ŷ in [0, 1] of the same shape."""
        mask, prob = np.asarray(mask), np.asarray(prob)
        if mask.shape != prob.shape:
            raise ValueError(f"mask shape {mask.shape} differs from prob shape {prob.shape}")
        if not np.issubdtype(prob.dtype, np.floating):
            raise ValueError(f"prob must be a float map in [0, 1] (got {prob.dtype})")
        if prob.size and not (prob.min() >= 0.0 and prob.max() <= 1.0):  # NaN fails too
            raise ValueError("prob must be finite and in [0, 1]")
        # Bin k holds scores in [k/bins, (k+1)/bins); 1.0 joins the top bin.
        index = np.minimum((prob * self.bins).astype(np.int64), self.bins - 1).ravel()
        # One bincount over (truth, bin) pairs: negatives in [0, bins), positives above.
        index += (mask.ravel() != 0) * self.bins
        both = np.bincount(index, minlength=2 * self.bins)
        self.negatives += both[: self.bins]
        self.positives += both[self.bins :]

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        used = np.flatnonzero(self.positives + self.negatives)[::-1]  # highest bin first
        if used.size == 0:
            raise ValueError("no pixels counted yet")
        tps = np.cumsum(self.positives[used])
        fps = np.cumsum(self.negatives[used])
        return tps, fps, used / self.bins  # threshold: the bin's lower edge

    def roc(self) -> RocCurve:
        return _roc(*self._cumulative())

    def pr(self) -> PrCurve:
        return _pr(*self._cumulative())

    def best_f1_threshold(self) -> tuple[float, float]:
        """(threshold, pooled F1 there): the bin edge whose `prob >= threshold` maximises the
        Dice of the pooled confusion matrix (ties: the threshold nearest 0.5)."""
        tps, fps, thresholds = self._cumulative()
        positives = int(self.positives.sum())
        if positives == 0:
            raise ValueError("no infected pixel counted: F1 is undefined")
        f1 = 2 * tps / (tps + fps + positives)
        best = np.flatnonzero(f1 == f1.max())
        pick = best[np.argmin(np.abs(thresholds[best] - 0.5))]
        return float(thresholds[pick]), float(f1[pick])
