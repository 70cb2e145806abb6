"""Evaluation figures: confusion matrices, ROC / PR curves, infection map beside Grad-CAM.

Figures are built on matplotlib's object API with the Agg canvas (never pyplot), so a
worker thread draws without a display and without global figure state. save_figure
writes PNG and SVG with the date stripped and SVG ids salted with a fixed string, so
the same figure gives the same bytes again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from mlworker.curves import PrCurve, RocCurve
from mlworker.metrics import Counts

FORMATS = ("png", "svg")
_DPI = 150


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)  # explicit Agg canvas
    return figure


def save_figure(
    figure: Figure, stem: str | Path, *, formats: Sequence[str] = FORMATS
) -> list[Path]:
    """Write `<stem>.png` and `<stem>.svg` (or the given formats); returns the paths."""
    stem = Path(stem)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unsupported figure format(s) {sorted(unknown)}; use {FORMATS}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context({"svg.hashsalt": "collabmask"}):
        for fmt in formats:
            path = stem.with_name(f"{stem.name}.{fmt}")
            # No date (SVG) and no software stamp (PNG): same figure, same bytes.
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            figure.savefig(path, format=fmt, metadata=metadata)
            paths.append(path)
    return paths


def confusion_matrix_figure(
    counts: Counts,
    *,
    title: str = "",
    labels: tuple[str, str] = ("Control", "COVID-19"),
) -> Figure:
    """The paper's cumulative confusion matrix: counts with row percentages."""
    matrix = counts.matrix()
    figure = _figure(3.8, 3.4)
    ax = figure.add_subplot()
    row_sums = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(row_sums > 0, matrix / np.maximum(row_sums, 1), 0.0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(matrix):
        colour = "white" if share[i, j] > 0.5 else "black"
        text = f"{value:,}\n({100 * share[i, j]:.2f} %)" if row_sums[i, 0] else f"{value:,}"
        ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=10)
    ax.set_xticks([0, 1], labels=list(labels))
    ax.set_yticks([0, 1], labels=list(labels), rotation=90, va="center")
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Ground truth")
    if title:
        ax.set_title(title)
    return figure


def _check_models(curves: Mapping[str, object], kind: type) -> None:
    if not curves:
        raise ValueError("give at least one model's curve")
    for name, curve in curves.items():
        if not isinstance(curve, kind):
            raise TypeError(f"curve for {name!r} is {type(curve).__name__}, not {kind.__name__}")


def roc_figure(curves: Mapping[str, RocCurve], *, title: str = "ROC") -> Figure:
    """ROC curves of several models on one axis, AUC in the legend."""
    _check_models(curves, RocCurve)
    figure = _figure(4.6, 4.2)
    ax = figure.add_subplot()
    for name, curve in curves.items():
        ax.plot(curve.fpr, curve.tpr, lw=1.6, label=f"{name} (AUC {curve.auc:.4f})")
    ax.plot([0, 1], [0, 1], ls=":", lw=1, color="grey")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 − specificity", ylabel="Sensitivity")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return figure


def pr_figure(curves: Mapping[str, PrCurve], *, title: str = "Precision–recall") -> Figure:
    """Precision–recall curves of several models, average precision in the legend."""
    _check_models(curves, PrCurve)
    figure = _figure(4.6, 4.2)
    ax = figure.add_subplot()
    for name, curve in curves.items():
        ax.step(
            curve.recall,
            curve.precision,
            where="post",
            lw=1.6,
            label=f"{name} (AP {curve.average_precision:.4f})",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall (sensitivity)", ylabel="Precision")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return figure


def map_and_gradcam_figure(
    xray: np.ndarray,
    infection_map: np.ndarray,
    gradcam: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    title: str = "",
) -> Figure:
    """CXR, infection map and Grad-CAM side by side (paper's comparison figure).

    xray: uint8 HxW; infection_map: uint8 HxWx3 from mlworker.maps; gradcam: float HxW
    in [0, 1] at the X-ray's resolution, drawn as the usual jet overlay at half opacity.
    mask: optional ground-truth mask, outlined in the first panel.
    """
    xray = np.asarray(xray)
    if xray.ndim != 2:
        raise ValueError(f"xray must be greyscale HxW (got shape {xray.shape})")
    if infection_map.shape != xray.shape + (3,):
        raise ValueError(f"infection map shape {infection_map.shape} does not match the X-ray")
    if gradcam.shape != xray.shape:
        raise ValueError(f"Grad-CAM shape {gradcam.shape} does not match the X-ray")
    figure = _figure(9.6, 3.6)
    axes = figure.subplots(1, 3)
    axes[0].imshow(xray, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("CXR" + (" + ground truth" if mask is not None else ""))
    if mask is not None:
        axes[0].contour(np.asarray(mask) != 0, levels=[0.5], colors="lime", linewidths=1)
    axes[1].imshow(infection_map)
    axes[1].set_title("Infection map")
    axes[2].imshow(xray, cmap="gray", vmin=0, vmax=255)
    axes[2].imshow(gradcam, cmap="jet", vmin=0, vmax=1, alpha=0.5)
    axes[2].set_title("Grad-CAM (COVID-19)")
    for ax in axes:
        ax.set_axis_off()
    # An opaque colour bar: the overlay's half opacity would wash it out.
    scale = ScalarMappable(norm=Normalize(0.0, 1.0), cmap="jet")
    figure.colorbar(scale, ax=axes[2], fraction=0.046, pad=0.02)
    if title:
        figure.suptitle(title)
    return figure
