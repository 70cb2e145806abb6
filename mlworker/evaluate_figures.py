"""The figures of an evaluation: pixel and case ROC / PR curves, confusion matrices, and the
gallery of infection maps (best, median and worst cases by per-image Dice).

mlworker.evaluate holds the numbers, mlworker.evaluate_report writes them; matplotlib's object API
through mlworker.plots (Agg canvas, reproducible bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlworker.evaluate import Evaluation
from mlworker.maps import infection_map, write_infection_map_png
from mlworker.plots import confusion_matrix_figure, pr_figure, roc_figure, save_figure

GALLERY_DIR = "gallery"


def _contour(ax, mask: np.ndarray, colour: str) -> None:
    if np.any(mask) and not np.all(mask):
        ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors=colour, linewidths=0.8)


def gallery_figure(
    evaluation: Evaluation,
    *,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    probs: Sequence[np.ndarray],
) -> Figure:
    """One row per group (best, median, worst); per case the CXR with the ground truth
    (green) and the predicted mask (red) outlined, and its infection map."""
    groups = [(g, picks) for g, picks in evaluation.gallery.items() if picks]
    columns = max(len(picks) for _, picks in groups)
    figure = Figure(figsize=(2.1 * 2 * columns, 2.4 * len(groups)), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_2d(figure.subplots(len(groups), 2 * columns, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    for row, (group, picks) in enumerate(groups):
        for col, i in enumerate(picks):
            xray = np.asarray(images[i], dtype=np.uint8)
            prob = np.asarray(probs[i], dtype=np.float32)
            left, right = axes[row, 2 * col], axes[row, 2 * col + 1]
            left.imshow(xray, cmap="gray", vmin=0, vmax=255)
            _contour(left, masks[i], "lime")
            _contour(left, prob >= evaluation.threshold, "red")
            left.set_title(f"{group}: {evaluation.names[i][:22]}", fontsize=7, loc="left")
            right.imshow(infection_map(xray, prob))
            right.set_title(f"Dice {evaluation.dice[i]:.3f}", fontsize=7)
    figure.suptitle(
        "Infection maps: ground truth green, prediction red (best, median, worst Dice)",
        fontsize=9,
    )
    return figure


def write_figures(
    evaluation: Evaluation,
    out: Path,
    *,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    probs: Sequence[np.ndarray],
) -> list[str]:
    """Writes every figure under `out`; returns the paths written, relative to `out`."""
    written: list[Path] = []
    curves = [("pixel", evaluation.pixel.roc, evaluation.pixel.pr)]
    if evaluation.detection is not None:
        curves.append(("case", evaluation.case_roc, evaluation.case_pr))
    for level, roc, pr in curves:
        what = "pixels" if level == "pixel" else "cases"
        if roc is not None:
            figure = roc_figure({"network": roc}, title=f"ROC ({what})")
            written += save_figure(figure, out / f"{level}_roc")
        if pr is not None:
            figure = pr_figure({"network": pr}, title=f"Precision–recall ({what})")
            written += save_figure(figure, out / f"{level}_pr")
    written += save_figure(
        confusion_matrix_figure(
            evaluation.pixel.counts,
            title="Pixels (COVID-19 cases)",
            labels=("Background", "Infection"),
        ),
        out / "pixel_confusion",
    )
    if evaluation.detection is not None:
        written += save_figure(
            confusion_matrix_figure(evaluation.detection.counts, title="Detection"),
            out / "case_confusion",
        )
    if any(evaluation.gallery.values()):
        figure = gallery_figure(evaluation, images=images, masks=masks, probs=probs)
        written += save_figure(figure, out / "gallery", formats=("png",))
        for group, picks in evaluation.gallery.items():
            for rank, i in enumerate(picks, start=1):
                stem = Path(evaluation.names[i]).stem
                path = out / GALLERY_DIR / f"{group}{rank}_{stem}_map.png"
                written.append(
                    write_infection_map_png(path, np.asarray(images[i], np.uint8), probs[i])
                )
    return [str(Path(p).relative_to(out)) for p in written]
