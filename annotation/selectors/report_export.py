"""A run report as figures (PNG data URIs), as CSV rows, and as one self-contained HTML file."""

from __future__ import annotations

import base64
import csv
import io
import math
from typing import Any

from annotation.selectors.report import METRICS, NetworkReport, RunReport

CSV_COLUMNS = (
    "run",
    "protocol",
    "level",
    "network",
    "arch",
    "encoder",
    "fold",
    *(f"{m}{suffix}" for m in (*METRICS, "iou") for suffix in ("", "_ci95")),
    "tp",
    "fp",
    "tn",
    "fn",
    "auc",
    "average_precision",
    "mean_dice",
    "params_trainable",
    "params_non_trainable",
    "ms_per_sample",
    "folds_done",
    "folds_total",
)


def _figure_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def report_figures(report: RunReport) -> dict[str, str]:
    """ROC and PR curves of every network (and classifier) on one axis each, as data URIs."""
    from mlworker.plots import pr_figure, roc_figure  # matplotlib: only when drawing

    figures = {}
    pixel = [n for n in report.networks if n.pixel_roc is not None]
    case = [n for n in report.networks + report.classifiers if n.case_roc is not None]
    if pixel:
        figures["pixel_roc"] = _figure_uri(
            roc_figure({n.label: n.pixel_roc for n in pixel}, title="Segmentation (pixels): ROC")
        )
        figures["pixel_pr"] = _figure_uri(
            pr_figure({n.label: n.pixel_pr for n in pixel}, title="Segmentation (pixels): PR")
        )
    if case:
        figures["case_roc"] = _figure_uri(
            roc_figure({n.label: n.case_roc for n in case}, title="Detection (cases): ROC")
        )
        figures["case_pr"] = _figure_uri(
            pr_figure({n.label: n.case_pr for n in case}, title="Detection (cases): PR")
        )
    return figures


def _number(value: float | None, digits: int = 6) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return round(float(value), digits)


def _rows(report: RunReport, item: NetworkReport, level: str, summary, extra: dict) -> list[dict]:
    """Rows of one network at one level: each fold, the fold mean, the cumulative matrix."""
    if summary is None:
        return []
    base = {
        "run": report.run,
        "protocol": report.protocol,
        "level": level,
        "network": item.label,
        "arch": item.arch,
        "encoder": item.encoder,
        "params_trainable": item.params_trainable or "",
        "params_non_trainable": item.params_non_trainable or "",
        "ms_per_sample": _number(item.ms_per_sample, 3),
        "folds_done": item.folds_done,
        "folds_total": item.folds_total,
    }
    key = "case" if level == "classifier" else level
    entries = [
        (str(mv.fold) if mv.fold is not None else "test", scores, mv.metrics["evaluation"][key])
        for mv, scores in zip(item.models, summary.folds, strict=True)
    ]
    c = summary.cumulative_counts
    entries.append(("mean", summary.mean, None))
    entries.append(
        ("cumulative", summary.cumulative, {"tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn})
    )
    rows = []
    for fold, scores, counts in entries:
        row = {**base, "fold": fold, **(counts or {})}
        for name in (*METRICS, "iou"):
            row[name] = _number(scores[name].value)
            row[f"{name}_ci95"] = _number(scores[name].ci)
        if fold == "cumulative":
            row.update(extra)
        rows.append(row)
    return rows


def report_csv(report: RunReport) -> str:
    """One row per network × level × fold, plus the fold mean and the cumulative matrix."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for item in report.networks:
        pixel_curves = {
            "auc": _number(item.pixel_roc.auc if item.pixel_roc else None),
            "average_precision": _number(
                item.pixel_pr.average_precision if item.pixel_pr else None
            ),
            "mean_dice": _number(item.mean_dice),
        }
        case_curves = {
            "auc": _number(item.case_roc.auc if item.case_roc else None),
            "average_precision": _number(item.case_pr.average_precision if item.case_pr else None),
        }
        writer.writerows(_rows(report, item, "pixel", item.pixel, pixel_curves))
        writer.writerows(_rows(report, item, "pixel_covid", item.pixel_covid, {}))
        writer.writerows(_rows(report, item, "case", item.case, case_curves))
    for item in report.classifiers:
        case_curves = {
            "auc": _number(item.case_roc.auc if item.case_roc else None),
            "average_precision": _number(item.case_pr.average_precision if item.case_pr else None),
        }
        writer.writerows(_rows(report, item, "classifier", item.case, case_curves))
    return buffer.getvalue()
