"""Evaluating a trained segmenter on a labelled set, as Degerli et al. 2021 report it.

Pixel level (the infection segmentation), over the COVID-19 cases that have a mask:
sensitivity, specificity, precision, F1 (= Dice of the pooled confusion matrix), F2, IoU,
each with its 95 % CI (mlworker.metrics), the mean per-image Dice, and ROC / PR curves of
the pixel scores (mlworker.curves.ScoreHistogram, memory-bounded). When controls are
present, the same pixel figures over every labelled case, and case detection: a CXR is
COVID-19 when any pixel of its map is ≥ threshold (mlworker.metrics.case_evaluation),
with ROC / PR over the per-case maximum.

`evaluate_probabilities` is pure numpy (probability maps in, `Evaluation` out);
`predict_cases` runs a Keras model (imported lazily, so this module stays cheap);
`write_report` writes metrics.json, per_image.csv, the figures and the gallery of
infection maps (best, median and worst cases by per-image Dice).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlworker.curves import PrCurve, RocCurve, ScoreHistogram, precision_recall_curve, roc_curve
from mlworker.metrics import (
    Z_95,
    CaseEvaluation,
    Counts,
    Score,
    case_evaluation,
    mean_dice,
    per_image_counts,
    scores,
)

PIXEL_METRICS = ("sensitivity", "specificity", "precision", "f1", "f2", "iou", "accuracy")
GALLERY_GROUPS = ("best", "median", "worst")


@dataclass(frozen=True)
class PixelEvaluation:
    """Pixel-level results over one group of cases."""

    cases: int
    counts: Counts
    scores: dict[str, Score]
    mean_dice: float
    mean_dice_ci: float  # 1.96 · sd / √n over the per-image Dice values
    roc: RocCurve | None  # None when the group has no infected or no clean pixel
    pr: PrCurve | None


@dataclass(frozen=True)
class Evaluation:
    names: list[str]
    threshold: float
    is_covid: np.ndarray  # bool (N,): truth for detection
    has_mask: np.ndarray  # bool (N,): COVID-19 case with a ground-truth mask
    counts: np.ndarray  # int64 (N, 4): tp, fp, tn, fn per image
    dice: np.ndarray  # float64 (N,): per-image Dice (1 where truth and prediction are empty)
    max_probs: np.ndarray  # float64 (N,)
    pixel: PixelEvaluation  # COVID-19 cases with masks
    pixel_with_controls: PixelEvaluation | None  # also the controls, when there are any
    detection: CaseEvaluation | None  # when both COVID-19 cases and controls are present
    case_roc: RocCurve | None = None
    case_pr: PrCurve | None = None
    gallery: dict[str, list[int]] = field(default_factory=dict)


def _dice_per_image(counts: np.ndarray) -> np.ndarray:
    tp, fp, fn = (counts[:, k].astype(np.float64) for k in (0, 1, 3))
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)


def _pixel_evaluation(
    counts: np.ndarray, dice: np.ndarray, histogram: ScoreHistogram
) -> PixelEvaluation:
    total = Counts.total(counts)
    n = len(counts)
    spread = float(dice.std(ddof=1)) if n > 1 else math.nan
    has_both = total.tp + total.fn > 0 and total.tn + total.fp > 0
    return PixelEvaluation(
        cases=n,
        counts=total,
        scores=scores(total, beta=2.0),
        mean_dice=mean_dice(counts),
        mean_dice_ci=Z_95 * spread / math.sqrt(n) if n > 1 else math.nan,
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
    counts = per_image_counts(masks, probs, threshold=threshold)
    dice = _dice_per_image(counts)
    max_probs = np.array([float(np.max(p)) for p in probs], dtype=np.float64)
    with_mask, controls = ScoreHistogram(), ScoreHistogram()
    for i in range(n):
        if has_mask[i] or not is_covid[i]:
            (with_mask if has_mask[i] else controls).add(
                np.asarray(masks[i]), np.asarray(probs[i], dtype=np.float32)
            )
    pixel = _pixel_evaluation(counts[has_mask], dice[has_mask], with_mask)
    pixel_all = detection = case_roc = case_pr = None
    if (~is_covid).any():
        both = ScoreHistogram(with_mask.bins)
        both.positives = with_mask.positives + controls.positives
        both.negatives = with_mask.negatives + controls.negatives
        labelled = has_mask | ~is_covid
        pixel_all = _pixel_evaluation(counts[labelled], dice[labelled], both)
        if is_covid.any():
            detection = case_evaluation(is_covid, max_probs, threshold=threshold)
            case_roc = roc_curve(is_covid, max_probs)
            case_pr = precision_recall_curve(is_covid, max_probs)
    return Evaluation(
        names=list(names),
        threshold=float(threshold),
        is_covid=is_covid,
        has_mask=has_mask,
        counts=counts,
        dice=dice,
        max_probs=max_probs,
        pixel=pixel,
        pixel_with_controls=pixel_all,
        detection=detection,
        case_roc=case_roc,
        case_pr=case_pr,
        gallery=pick_gallery(dice, np.flatnonzero(has_mask), per_group=gallery_per_group),
    )


def predict_cases(
    model: Any,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    batch_size: int = 16,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Probability maps at each image's own resolution (mlworker.predict, the same code
    `python -m mlworker predict` runs, so evaluated and predicted masks agree)."""
    from mlworker.predict import predict_probabilities

    return predict_probabilities(model, images, batch_size=batch_size, progress=progress)


# --- reporting -------------------------------------------------------------------------


def _score_json(score: Score) -> dict[str, float | int | None]:
    def num(x: float) -> float | None:
        return None if math.isnan(x) else round(float(x), 6)

    return {
        "value": num(score.value),
        "ci95": num(score.ci),
        "low": num(score.low),
        "high": num(score.high),
        "n": int(score.n),
    }


def _counts_json(counts: Counts) -> dict[str, int]:
    return {"tp": counts.tp, "fp": counts.fp, "tn": counts.tn, "fn": counts.fn}


def _pixel_json(pixel: PixelEvaluation) -> dict[str, Any]:
    return {
        "cases": pixel.cases,
        "counts": _counts_json(pixel.counts),
        **{name: _score_json(pixel.scores[name]) for name in PIXEL_METRICS},
        "mean_dice": {
            "value": round(pixel.mean_dice, 6),
            "ci95": None if math.isnan(pixel.mean_dice_ci) else round(pixel.mean_dice_ci, 6),
            "n": pixel.cases,
        },
        "roc_auc": None if pixel.roc is None else round(pixel.roc.auc, 6),
        "average_precision": None if pixel.pr is None else round(pixel.pr.average_precision, 6),
    }


def evaluation_json(evaluation: Evaluation, **context: Any) -> dict[str, Any]:
    """Everything metrics.json holds; `context` (model, data, size...) goes in first."""
    out: dict[str, Any] = dict(context)
    out["threshold"] = evaluation.threshold
    out["cases"] = {
        "total": len(evaluation.names),
        "covid": int(evaluation.is_covid.sum()),
        "covid_with_mask": int(evaluation.has_mask.sum()),
        "control": int((~evaluation.is_covid).sum()),
    }
    out["pixel"] = _pixel_json(evaluation.pixel)
    if evaluation.pixel_with_controls is not None:
        out["pixel_with_controls"] = _pixel_json(evaluation.pixel_with_controls)
    if evaluation.detection is not None:
        det = evaluation.detection
        out["detection"] = {
            "counts": _counts_json(det.counts),
            **{name: _score_json(det.scores[name]) for name in PIXEL_METRICS},
            "roc_auc": round(evaluation.case_roc.auc, 6) if evaluation.case_roc else None,
            "average_precision": (
                round(evaluation.case_pr.average_precision, 6) if evaluation.case_pr else None
            ),
        }
    out["gallery"] = {
        group: [evaluation.names[i] for i in picks] for group, picks in evaluation.gallery.items()
    }
    return out


def summary_lines(evaluation: Evaluation) -> list[str]:
    """A short human summary, the paper's way: '83.20 ± 0.01' per metric, in %."""
    lines = []
    blocks = [("pixel (COVID-19 cases with masks)", evaluation.pixel)]
    if evaluation.pixel_with_controls is not None:
        blocks.append(("pixel (with controls)", evaluation.pixel_with_controls))
    for title, pixel in blocks:
        cells = ", ".join(f"{k} {pixel.scores[k].percent()}" for k in PIXEL_METRICS[:6])
        lines.append(
            f"{title}, {pixel.cases} cases: {cells}; mean Dice {100 * pixel.mean_dice:.2f}"
            + (f", AUC {pixel.roc.auc:.4f}" if pixel.roc else "")
        )
    if evaluation.detection is not None:
        det = evaluation.detection
        cells = ", ".join(
            f"{k} {det.scores[k].percent()}" for k in ("sensitivity", "specificity", "f1")
        )
        auc = f", AUC {evaluation.case_roc.auc:.4f}" if evaluation.case_roc else ""
        lines.append(f"detection, {len(evaluation.names)} cases: {cells}{auc}")
    return lines


def write_per_image_csv(evaluation: Evaluation, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["name", "truth", "has_mask", "dice", "tp", "fp", "tn", "fn", "max_prob"])
        for i, name in enumerate(evaluation.names):
            tp, fp, tn, fn = (int(v) for v in evaluation.counts[i])
            writer.writerow(
                [
                    name,
                    "covid" if evaluation.is_covid[i] else "control",
                    int(evaluation.has_mask[i]),
                    f"{evaluation.dice[i]:.6f}",
                    tp,
                    fp,
                    tn,
                    fn,
                    f"{evaluation.max_probs[i]:.6f}",
                ]
            )


def write_report(
    evaluation: Evaluation,
    out: str | Path,
    *,
    images: np.ndarray | Sequence[np.ndarray],
    masks: np.ndarray | Sequence[np.ndarray],
    probs: np.ndarray | Sequence[np.ndarray],
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes OUT/metrics.json, per_image.csv, the curve figures and the gallery; returns
    the metrics dict. `images` are the uint8 CXRs the maps belong to (same order)."""
    from mlworker.evaluate_figures import write_figures

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluation_json(evaluation, **(context or {}))
    metrics["files"] = write_figures(evaluation, out, images=images, masks=masks, probs=probs)
    write_per_image_csv(evaluation, out / "per_image.csv")
    metrics["files"].append("per_image.csv")
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / "metrics.json")
    return metrics
