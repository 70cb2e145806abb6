"""Scoring a segmenter's probability maps on a labelled set, as Degerli et al. 2021 report it.

Pixel level (the infection segmentation), over the COVID-19 cases that have a mask:
sensitivity, specificity, precision, F1 (= Dice of the pooled confusion matrix), F2, IoU,
each with its 95 % CI (mlworker.metrics), the mean per-image Dice, and ROC / PR curves of
the pixel scores (mlworker.curves.ScoreHistogram, memory-bounded). When controls are
present, the same pixel figures over every labelled case, and case detection: a CXR is
COVID-19 when any pixel of its map is ≥ threshold (mlworker.metrics.case_evaluation),
with ROC / PR over the per-case maximum.

`Evaluation` is the one result type, for a segmenter evaluated here and for the final
detector (mlworker.detection.evaluate). `EvaluationTally` scores cases as their maps come;
`evaluate_probabilities` is pure numpy (probability maps in, `Evaluation` out);
`predict_cases` runs a Keras model (imported lazily, so this module stays cheap). The
report files are mlworker.evaluate_report's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from mlworker.curves import PrCurve, RocCurve, ScoreHistogram, precision_recall_curve, roc_curve
from mlworker.metrics import (
    Z_95,
    CaseEvaluation,
    Counts,
    Score,
    case_evaluation,
    dice_per_image,
    mean_dice,
    per_image_counts,
    scores,
)

GALLERY_GROUPS = ("best", "median", "worst")
# Lesions under this share of the image are "small" (the issue tracker's and the literature's
# split): per-image Dice is reported for small and large lesions apart, since pooled F1 is
# dominated by the large ones.
SMALL_LESION_SHARE = 0.02
DICE_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
PIXEL_BINS = 1024  # ScoreHistogram's bins for pixel-level curves


@dataclass(frozen=True)
class PixelEvaluation:
    """Pixel-level results over one group of cases."""

    cases: int
    counts: Counts
    scores: dict[str, Score]
    mean_dice: float
    mean_dice_ci: float  # 1.96 · sd / √n over the per-image Dice values
    # Per-image Dice distribution: min, quartiles and max (DICE_QUANTILES).
    dice_quantiles: tuple[float, ...]
    # "small" / "large" lesions (truth < / ≥ SMALL_LESION_SHARE of the image; images without
    # infection are in neither): (cases, mean per-image Dice), the mean NaN when no case.
    by_lesion_size: dict[str, tuple[int, float]]
    roc: RocCurve | None  # None when the group has no infected or no clean pixel
    pr: PrCurve | None


@dataclass(frozen=True)
class Evaluation:
    """Probability maps scored against the truth: one row per case, and the pixel and case
    figures made of those rows (the paper's Tables 2–4 and 6–7)."""

    names: list[str]
    threshold: float
    is_covid: np.ndarray  # bool (N,): truth for detection
    has_mask: np.ndarray  # bool (N,): COVID-19 case with a ground-truth mask
    counts: np.ndarray  # int64 (N, 4): tp, fp, tn, fn per image
    max_probs: np.ndarray  # float64 (N,)
    mask_histogram: ScoreHistogram  # pixel scores of the COVID-19 cases with masks
    control_histogram: ScoreHistogram  # pixel scores of the controls
    gallery: dict[str, list[int]] = field(default_factory=dict)
    ms_per_sample: float | None = None  # prediction time per case, where it was measured

    @cached_property
    def dice(self) -> np.ndarray:
        """float64 (N,): per-image Dice (1 where truth and prediction are empty)."""
        return dice_per_image(self.counts)

    @cached_property
    def severities(self) -> np.ndarray:
        """float64 (N,): the infected share of each image, the detection rule's severity."""
        tp, fp = self.counts[:, 0], self.counts[:, 1]
        return (tp + fp) / self.counts.sum(axis=1)

    @cached_property
    def histogram(self) -> ScoreHistogram:
        """Pixel scores of every labelled case (with a mask, or a control)."""
        both = ScoreHistogram(self.mask_histogram.bins)
        both.positives = self.mask_histogram.positives + self.control_histogram.positives
        both.negatives = self.mask_histogram.negatives + self.control_histogram.negatives
        return both

    @cached_property
    def pixel(self) -> PixelEvaluation:
        """The COVID-19 cases with masks."""
        return _pixel_evaluation(
            self.counts[self.has_mask], self.dice[self.has_mask], self.mask_histogram
        )

    @cached_property
    def pixel_with_controls(self) -> PixelEvaluation | None:
        """Every labelled case, when there are controls."""
        if not (~self.is_covid).any():
            return None
        labelled = self.has_mask | ~self.is_covid
        return _pixel_evaluation(self.counts[labelled], self.dice[labelled], self.histogram)

    @cached_property
    def detection(self) -> CaseEvaluation | None:
        """Case detection, when both COVID-19 cases and controls are present."""
        if not (~self.is_covid).any() or not self.is_covid.any():
            return None
        return case_evaluation(self.is_covid, self.max_probs, threshold=self.threshold)

    @cached_property
    def case_roc(self) -> RocCurve | None:
        return None if self.detection is None else roc_curve(self.is_covid, self.max_probs)

    @cached_property
    def case_pr(self) -> PrCurve | None:
        if self.detection is None:
            return None
        return precision_recall_curve(self.is_covid, self.max_probs)


def _pixel_evaluation(
    counts: np.ndarray, dice: np.ndarray, histogram: ScoreHistogram
) -> PixelEvaluation:
    total = Counts.total(counts)
    n = len(counts)
    spread = float(dice.std(ddof=1)) if n > 1 else math.nan
    share = (counts[:, 0] + counts[:, 3]) / np.maximum(counts.sum(axis=1), 1)
    groups = {
        "small": (share > 0) & (share < SMALL_LESION_SHARE),
        "large": share >= SMALL_LESION_SHARE,
    }
    by_size = {
        name: (int(rows.sum()), float(dice[rows].mean()) if rows.any() else math.nan)
        for name, rows in groups.items()
    }
    has_both = total.tp + total.fn > 0 and total.tn + total.fp > 0
    return PixelEvaluation(
        cases=n,
        counts=total,
        scores=scores(total, beta=2.0),
        mean_dice=mean_dice(counts),
        mean_dice_ci=Z_95 * spread / math.sqrt(n) if n > 1 else math.nan,
        dice_quantiles=tuple(float(q) for q in np.quantile(dice, DICE_QUANTILES)),
        by_lesion_size=by_size,
        roc=histogram.roc() if has_both else None,
        pr=histogram.pr() if total.tp + total.fn > 0 else None,
    )


def pick_gallery(dice: np.ndarray, candidates: np.ndarray, *, per_group: int) -> dict[str, list]:
    """Positions of the best, median and worst `per_group` candidates by Dice, no case twice
    when there are enough of them (best first in "best", worst first in "worst")."""
    order = candidates[np.argsort(-dice[candidates], kind="stable")]  # best first
    k = min(per_group, len(order))
    if k == 0:
        return {group: [] for group in GALLERY_GROUPS}
    best, worst = order[:k], order[::-1][:k]
    middle = len(order) // 2
    start = min(max(middle - k // 2, 0), len(order) - k)
    median = order[start : start + k]
    if len(order) >= 3 * k:  # keep the three groups apart
        start = min(max(start, k), len(order) - 2 * k)
        median = order[start : start + k]
    return {"best": best.tolist(), "median": median.tolist(), "worst": worst.tolist()}


class EvaluationTally:
    """Scores cases as their maps come, a chunk at a time, so memory stays at one chunk's
    maps whatever the number of cases; `result()` is the Evaluation of all of them."""

    def __init__(self, *, threshold: float = 0.5, bins: int = PIXEL_BINS) -> None:
        self.threshold = float(threshold)
        self.rows: list[np.ndarray] = []
        self.max_probs: list[float] = []
        self.is_covid: list[bool] = []
        self.has_mask: list[bool] = []
        self.with_mask, self.controls = ScoreHistogram(bins), ScoreHistogram(bins)

    def add(
        self,
        masks: np.ndarray | Sequence[np.ndarray],
        probs: np.ndarray | Sequence[np.ndarray],
        *,
        is_covid: Sequence[bool] | np.ndarray,
        has_mask: Sequence[bool] | np.ndarray,
    ) -> None:
        """Counts cases: their masks, maps, labels and whether each has a mask."""
        self.rows.append(per_image_counts(masks, probs, threshold=self.threshold))
        self.max_probs += [float(np.max(p)) for p in probs]
        for i, (covid, masked) in enumerate(zip(is_covid, has_mask, strict=True)):
            self.is_covid.append(bool(covid))
            self.has_mask.append(bool(masked))
            if masked or not covid:
                (self.with_mask if masked else self.controls).add(
                    np.asarray(masks[i]), np.asarray(probs[i], dtype=np.float32)
                )

    def result(
        self,
        *,
        names: Sequence[str] | None = None,
        gallery_per_group: int = 0,
        ms_per_sample: float | None = None,
    ) -> Evaluation:
        """The Evaluation of every case counted; names default to the cases' positions."""
        counts = np.concatenate(self.rows) if self.rows else np.zeros((0, 4), np.int64)
        n = len(counts)
        has_mask = np.array(self.has_mask, dtype=bool)
        return Evaluation(
            names=[str(i) for i in range(n)] if names is None else list(names),
            threshold=self.threshold,
            is_covid=np.array(self.is_covid, dtype=bool),
            has_mask=has_mask,
            counts=counts,
            max_probs=np.array(self.max_probs, dtype=np.float64),
            mask_histogram=self.with_mask,
            control_histogram=self.controls,
            gallery=pick_gallery(
                dice_per_image(counts), np.flatnonzero(has_mask), per_group=gallery_per_group
            ),
            ms_per_sample=ms_per_sample,
        )


def evaluate_probabilities(
    *,
    names: Sequence[str],
    masks: np.ndarray | Sequence[np.ndarray],
    probs: np.ndarray | Sequence[np.ndarray],
    is_covid: Sequence[bool] | np.ndarray,
    has_mask: Sequence[bool] | np.ndarray | None = None,
    threshold: float = 0.5,
    gallery_per_group: int = 3,
) -> Evaluation:
    """Scores probability maps `probs` against `masks` (one per case, same shapes).

    is_covid: truth for detection (COVID-19 or control). has_mask: which COVID-19 cases have
    a ground-truth mask (default: all of them); controls count with empty masks and COVID-19
    cases without a mask only in detection.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    n = len(names)
    is_covid = np.asarray(is_covid, dtype=bool)
    has_mask = is_covid.copy() if has_mask is None else np.asarray(has_mask, dtype=bool)
    if not (len(masks) == len(probs) == len(is_covid) == len(has_mask) == n):
        raise ValueError(
            f"{n} names, {len(masks)} masks, {len(probs)} maps, {len(is_covid)} labels: "
            "give one of each per case"
        )
    if (has_mask & ~is_covid).any():
        raise ValueError("a control has no infection mask: has_mask must be False for controls")
    if not has_mask.any():
        raise ValueError("no COVID-19 case with a ground-truth mask: nothing to segment")
    tally = EvaluationTally(threshold=threshold)
    tally.add(masks, probs, is_covid=is_covid, has_mask=has_mask)
    return tally.result(names=names, gallery_per_group=gallery_per_group)


def predict_cases(
    model: Any,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    batch_size: int = 16,
    progress: Callable[[dict[str, int]], None] | None = None,
    mirror: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """Probability maps at each image's own resolution (mlworker.predict, the same code
    `python -m mlworker predict` runs, so evaluated and predicted masks agree)."""
    from mlworker.predict import predict_probabilities

    return predict_probabilities(
        model, images, batch_size=batch_size, progress=progress, mirror=mirror
    )
