"""The report of an evaluation: metrics.json, per_image.csv, a short summary, the figures.

`write_report` writes OUT/metrics.json, per_image.csv, the curve figures and the gallery of
infection maps (best, median and worst cases by per-image Dice; mlworker.evaluate_figures).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlworker.evaluate import SMALL_LESION_SHARE, Evaluation, PixelEvaluation
from mlworker.evaluate_figures import write_figures
from mlworker.metrics import Score

PIXEL_METRICS = ("sensitivity", "specificity", "precision", "f1", "f2", "iou", "accuracy")


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


def _pixel_json(pixel: PixelEvaluation) -> dict[str, Any]:
    return {
        "cases": pixel.cases,
        "counts": pixel.counts.as_dict(),
        **{name: _score_json(pixel.scores[name]) for name in PIXEL_METRICS},
        "mean_dice": {
            "value": round(pixel.mean_dice, 6),
            "ci95": None if math.isnan(pixel.mean_dice_ci) else round(pixel.mean_dice_ci, 6),
            "n": pixel.cases,
            "quantiles": dict(
                zip(
                    ("min", "q25", "median", "q75", "max"),
                    (round(q, 6) for q in pixel.dice_quantiles),
                    strict=True,
                )
            ),
        },
        "dice_by_lesion_size": {
            name: {"cases": cases, "mean_dice": None if math.isnan(mean) else round(mean, 6)}
            for name, (cases, mean) in pixel.by_lesion_size.items()
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
            "counts": det.counts.as_dict(),
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
        low, q25, median, q75, high = (100 * q for q in pixel.dice_quantiles)
        sizes = ", ".join(
            f"{name} lesions {cases} cases"
            + ("" if math.isnan(mean) else f" mean Dice {100 * mean:.2f}")
            for name, (cases, mean) in pixel.by_lesion_size.items()
        )
        lines.append(
            f"  pooled F1 {pixel.scores['f1'].percent()} vs mean per-image Dice "
            f"{100 * pixel.mean_dice:.2f}; per-image Dice min {low:.1f} · q25 {q25:.1f} · "
            f"median {median:.1f} · q75 {q75:.1f} · max {high:.1f}; {sizes} "
            f"(small: < {100 * SMALL_LESION_SHARE:g} % of the image)"
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
